"""Feature artifacts: thin Luigi wrappers over :mod:`prep.squad` and :mod:`prep.gap`.

    luigi --module pipeline SquadFeatures --input dev-v1.1.json --split eval --nproc 4 --local-scheduler
    luigi --module pipeline GapFeatures --input gap-development.tsv --local-scheduler
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import SchedulerProgress, artifact_dir, content_hash, significant_params
from prep.artifact import MANIFEST, SCHEMA_VERSION
from prep.pool import MODES, available_cpus
from prep.tokenizer import default_model_dir, tokenizer_fingerprint


class _FeaturesTask(luigi.Task):
    input = luigi.Parameter(description="raw data file")
    tokenizer = luigi.OptionalParameter(default=None, description="model/tokenizer folder (default: packaged MiniLM)")
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False)
    mode = luigi.ChoiceParameter(choices=MODES, default="shards", significant=False)
    reserve_cpus = luigi.IntParameter(default=1, significant=False)

    dataset = ""  # set by subclasses

    @property
    def tokenizer_dir(self) -> Path:
        return Path(self.tokenizer) if self.tokenizer else default_model_dir()

    @property
    def out_dir(self) -> Path:
        # Paths stay in the hash (they are the task's identity in Luigi); contents are added so an
        # edited input or tokenizer gives a new artifact.
        payload = {
            **significant_params(self),
            "input": content_hash(self.input),
            "tokenizer": tokenizer_fingerprint(self.tokenizer_dir),
            "schema_version": SCHEMA_VERSION,
        }
        return artifact_dir(f"features/{self.dataset}-{self.split_name}", payload)

    @property
    def split_name(self) -> str:
        return getattr(self, "split", "all")

    def output(self):
        return luigi.LocalTarget(str(self.out_dir / MANIFEST))


class SquadFeatures(_FeaturesTask):
    split = luigi.ChoiceParameter(choices=("train", "eval"), default="train")
    max_seq_length = luigi.IntParameter(default=384)
    doc_stride = luigi.IntParameter(default=128)
    max_query_length = luigi.IntParameter(default=64)
    contexts_per_chunk = luigi.IntParameter(default=32, significant=False)

    dataset = "squad"

    def run(self):
        from prep.squad import SquadPrepConfig, prepare_squad

        config = SquadPrepConfig(self.max_seq_length, self.doc_stride, self.max_query_length, self.split)
        prepare_squad(self.input, self.out_dir, self.tokenizer_dir, config, self.nproc, self.mode,
                      self.contexts_per_chunk, self.reserve_cpus, SchedulerProgress(self, "SQuAD prep"))


class GapFeatures(_FeaturesTask):
    max_seq_length = luigi.IntParameter(default=256)

    dataset = "gap"

    @property
    def split_name(self) -> str:
        return Path(self.input).stem.replace("gap-", "")

    def run(self):
        from prep.gap import GapPrepConfig, prepare_gap

        prepare_gap(self.input, self.out_dir, self.tokenizer_dir, GapPrepConfig(self.max_seq_length),
                    nproc=self.nproc, mode=self.mode, reserve_cpus=self.reserve_cpus,
                    progress=SchedulerProgress(self, "GAP prep"))
