"""Feature artifacts: ``<Task>Features``, one per registered task (pipeline.generated), a thin wrapper
over the task's ``prepare``.

    luigi --module pipeline SquadFeatures --input dev-v1.1.json --split eval --nproc 4 --local-scheduler
    luigi --module pipeline SquadFeatures --data squad-dev-v1.1 --split eval --local-scheduler
    luigi --module pipeline GapFeatures --data gap-development --local-scheduler

``--input`` takes a file; ``--data`` names an official file that the DataFile task fetches (or
finds where luigi.cfg's [inputs] section says).

``--shards K`` splits the prep into K tasks of the same class (``--shard 0`` ... ``K-1``, each a
cached artifact any worker can run, see prep.shards) and this task into the set that reads
them as one data set: ``luigi --module pipeline GapFeatures --data gap-development --shards 4``,
or ``[GapFeatures] shards = 4`` in luigi.cfg for every GapFeatures of a run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import luigi

from pipeline.artifacts import Artifact, SchedulerProgress, content_hash, significant_params
from pipeline.data import OFFICIAL, DataFile
from pipeline.params import EncoderDirParameter, dataclass_parameters
from pipeline.splits import SPLITS, Splits
from prep.artifact import SCHEMA_VERSION
from prep.folders import FeaturesFolder
from prep.pool import MODES, available_cpus
from prep.shards import merge_shards, prep_shard
from prep.models import resolve_model
from prep.tokenizer import tokenizer_fingerprint
from tasks import get_task


class FeaturesTask(Artifact):
    """Base of the generated ``<Task>Features`` classes (pipeline.generated): one per registered
    task, its prep config's fields as parameters (``SquadFeatures --max-seq-length 256``)."""

    input = luigi.OptionalParameter(default=None, description="raw data file")
    data = luigi.OptionalChoiceParameter(choices=tuple(OFFICIAL), default=None,
                                         description="an official file by name, fetched by DataFile")
    splits = luigi.OptionalDictParameter(
        default=None, description="a user-data task's Splits config: the input is one of its split files")
    split_file = luigi.OptionalChoiceParameter(choices=SPLITS, default=None, description="with --splits: which split")
    model_dir = EncoderDirParameter(default=None, description="encoder folder or Hugging Face Hub id whose "
                                                              "tokenizer is used (default: the packaged MiniLM)")
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False)
    mode = luigi.ChoiceParameter(choices=MODES, default="shards", significant=False)
    reserve_cpus = luigi.IntParameter(default=1, significant=False)
    shards = luigi.IntParameter(default=1, description="split the prep into this many independent tasks (prep.shards)")
    shard = luigi.OptionalIntParameter(default=None, description="with --shards K: build shard 0..K-1 only (set by the DAG)")

    dataset = ""  # the task's name, set by each generated class
    done_file = FeaturesFolder.MANIFEST

    @classmethod
    def class_attributes(cls, spec) -> dict:
        """What task ``spec``'s generated class sets: its prep config's fields as parameters."""
        params = dataclass_parameters(spec.prep.config)
        return {**params, "dataset": spec.name, "_prep_fields": tuple(params)}

    def check_parameters(self) -> None:
        given = [name for name in ("input", "data", "splits") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError(f"{self.task_family}: give exactly one of --input FILE, --data NAME or --splits CONFIG")
        if self.splits is not None and self.split_file is None:
            raise ValueError(f"{self.task_family}: --splits needs --split-file (one of {SPLITS})")
        if self.shards < 1:
            raise ValueError(f"{self.task_family}: --shards must be >= 1, got {self.shards}")
        if self.shard is not None and not 0 <= self.shard < self.shards:
            raise ValueError(f"{self.task_family}: --shard {self.shard} is not in 0..{self.shards - 1} (--shards)")
        try:
            get_task(self.dataset).prep.make_config(**{name: getattr(self, name) for name in self._prep_fields})
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.task_family}: {err}") from None

    def requires(self):
        if self.splits is not None:
            inputs = [self._splits_task()]
        else:
            inputs = [DataFile(name=self.data)] if self.data else []
        return inputs + self.shard_tasks()

    def shard_tasks(self) -> list:
        """The K shard tasks of a set (``--shards K``, no ``--shard``); none otherwise."""
        if self.shard is not None or self.shards == 1:
            return []
        return [self.clone(shard=index) for index in range(self.shards)]

    def _splits_task(self) -> Splits:
        return Splits(task=self.dataset, config=self.splits)

    @property
    def input_path(self) -> Path:
        if self.splits is not None:
            return self._splits_task().split_path(self.split_file)
        return Path(self.input) if self.input else DataFile(name=self.data).path

    @property
    def tokenizer_dir(self) -> Path:
        """The model's local folder (a Hub id's snapshot in the Hugging Face cache: prep.models)."""
        return resolve_model(self.model_dir)

    def folder_kind(self) -> str:
        part = f"-shard{self.shard}of{self.shards}" if self.shard is not None else ""
        return f"features/{self.dataset}-{self.split_name}{part}"

    def name_payload(self) -> dict | None:
        # Paths stay in the hash (they are the task's identity in Luigi); contents are added so an
        # edited input or tokenizer gives a new artifact.
        if not self.input_path.is_file():  # DataFile has not fetched it yet
            return None
        params = significant_params(self)
        if self.shards == 1:  # unsharded artifacts keep the names they had before --shards existed
            params.pop("shards", None)
            params.pop("shard", None)
        return {
            **params,
            "input_sha256": content_hash(self.input_path),
            "tokenizer": tokenizer_fingerprint(self.tokenizer_dir),
            "schema_version": SCHEMA_VERSION,
        }

    @property
    def split_name(self) -> str:
        split = getattr(self, "split", None) or self.split_file
        return split if split else self.input_path.stem.replace(f"{self.dataset}-", "")

    def run(self):
        spec = get_task(self.dataset)
        if self.shard_tasks():  # the set: a manifest over the finished shards
            merge_shards([task.out_dir for task in self.shard_tasks()], self.ready_dir())
            return
        config = spec.prep.make_config(**{name: getattr(self, name) for name in self._prep_fields})
        with contextlib.ExitStack() as stack:
            what = f"{spec.name} prep"
            if self.shard is not None:
                stack.enter_context(prep_shard(self.shard, self.shards))
                what += f" (shard {self.shard} of {self.shards})"
            spec.prep.prepare(self.input_path, self.ready_dir(), self.tokenizer_dir, config, nproc=self.nproc,
                              mode=self.mode, reserve_cpus=self.reserve_cpus, progress=SchedulerProgress(self, what))


FEATURES: dict[str, type[FeaturesTask]] = {}  # task name -> its <Task>Features, filled by pipeline.generated


def features_task(task: str, params, model_dir: str | None = None, nproc: int | None = None) -> FeaturesTask:
    """Task ``task``'s ``<Task>Features`` with ``params`` (its own parameters, ``data`` included)."""
    extra = {"model_dir": model_dir} if model_dir is not None else {}
    if nproc is not None:
        extra["nproc"] = nproc
    return FEATURES[task](**{**dict(params), **extra})
