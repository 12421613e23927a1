"""``FineTuned``: a fine-tuned model folder, produced by ``python -m train`` in a subprocess.

    luigi --module pipeline GapFineTuned --train-features '{"data": "gap-development"}' \\
        --select-features '{"data": "gap-validation"}' --world-size 2 --local-scheduler
    luigi --module pipeline FineTuned --task gap --features-dir runs/features/gap-development-<hash> \\
        --eval-features-dir runs/features/gap-validation-<hash> --local-scheduler

With ``--train-features`` / ``--select-features`` (a ``<Task>Features`` task's parameters) the
features are upstream tasks, built first; ``--features-dir`` takes a finished folder instead.

Every field of :class:`train.config.TrainConfig` is a parameter of the same name; the task writes
the run's config to ``<run folder>/launch_config.json`` and launches
``python -m train --config <that file>``.

The run folder is ``<runs_dir>/finetune-<task>-<head>-<hash>``, the hash covering the
parameters that change the result and the (content-addressed) features folders' names (world_size, per_device_batch_size, device and num_workers
are ``significant=False``: the global batch is fixed, so they only change speed). The
trainer is launched as a fresh process (``torchrun --standalone`` for world_size > 1), never
forked from this one; a folder left by a crashed attempt is continued with ``--resume``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path

import luigi

from pipeline.artifacts import Artifact, FolderOutput, bertflow, upstream_dir
from pipeline.console import TrainingReporter, say
from pipeline.params import dataclass_parameters
from pipeline.prep_tasks import features_task
from prep.artifact import remove_stale_temps, write_json_atomic
from prep.folders import FeaturesFolder, RunFolder
from prep.locking import artifact_lock
from prep.pool import available_cpus
from tasks import get_task, task_names
from train.checkpoint import SCHEMA_VERSION
from train.config import TrainConfig, choose_precision
from train.gpus import NvmlUnavailable, claimed_gpus
from train.launch import (check_world_size, cpu_native_bf16, launch_command, read_progress, run_logged,
                          visible_cuda_devices)

_POLL_SECONDS = 5.0


# TrainConfig fields that only change speed or logging (the global batch is fixed whatever the
# world size) stay out of the run folder's hash; the launcher sets world_size, the task's
# own out_dir names the runs root, and resume is decided from the folder.
_INSIGNIFICANT = ("per_device_batch_size", "device", "num_workers", "pad_to_multiple_of", "log_every_n_steps",
                  "save_every_n_steps", "nvtx", "compile", "progress_bar",
                  # the same dropout distribution from other random draws: results differ as a new seed's would
                  "fast_cpu",
                  # a sweep's trial (pipeline/sweep.py) trains the same run as any run with its settings
                  "trial_storage", "trial_study", "trial_number")

# Fields added after runs were published: unset (None, the old behaviour) they stay out of the hash,
# so the run folders made before them keep their names.
_HASHED_WHEN_SET = ("dropout", "early_stopping_patience", "attention_dropout")


class FineTuned(Artifact):
    """A fine-tuned run folder; every TrainConfig field is a parameter (``--FineTuned-weight-decay 0``)."""

    # The one exception to the artifacts' hash length: run folders were published with 10 hex
    # digits (docs/results), and every evaluation's name hashes its run folder's name.
    hash_length = 10
    done_file = RunFolder.METRICS

    locals().update(dataclass_parameters(
        TrainConfig, skip=("run_dir", "resume", "progress_bar", "features_dir", "eval_features_dir"),
        insignificant=(*_INSIGNIFICANT, "world_size"), choices={"task": task_names()},
    ))
    # The features: <Task>Features parameters (an edge in the DAG), or finished folders by path.
    train_features = luigi.OptionalDictParameter(
        default=None, description='the <Task>Features parameters of the training features, e.g. {"data": "gap-development"}')
    select_features = luigi.OptionalDictParameter(
        default=None, description="the held-out features' <Task>Features parameters (epoch selection, calibration)")
    features_dir = luigi.OptionalParameter(default=None, description="a finished features folder, instead")
    eval_features_dir = luigi.OptionalParameter(default=None, description="a finished held-out features folder")
    prep_nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False,
                                    description="processes for the features this run needs")
    runs_dir = luigi.OptionalParameter(default=None, description="the runs root (default: [bertflow] runs_dir)")

    @property
    def resources(self):
        return {"gpu": self.world_size} if self.device != "cpu" and visible_cuda_devices() > 0 else {}

    @property
    def resolved_head(self) -> str:
        return self.head or get_task(self.task).train.default_head

    def requires(self):
        required = {}
        for role, params, path in (("train", self.train_features, self.features_dir),
                                   ("select", self.select_features, self.eval_features_dir)):
            if params is not None:
                required[role] = features_task(self.task, params, self.model_dir, self.prep_nproc)
            elif path:
                required[role] = FolderOutput(path=path, marker=FeaturesFolder.MANIFEST)
        return required

    def check_parameters(self) -> None:
        # The TrainConfig this run will hand the trainer, its folders not known yet: a bad knob
        # (--GapFineTuned-lr -1, an unknown head) is refused before anything is scheduled.
        if self.train_features is None and not self.features_dir:
            raise ValueError(f"{self.task_family}: give train_features (a DAG edge) or features_dir (a folder)")
        select = self.select_features is not None or bool(self.eval_features_dir)
        values = {name: getattr(self, name) for name in self._train_fields()}
        try:
            TrainConfig(**{**values, "run_dir": "", "features_dir": "", "head": self.resolved_head,
                           "eval_features_dir": "(the select features)" if select else None}
                        ).for_task(get_task(self.task).train)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.task_family}: {err}") from None

    def feature_dirs(self) -> dict[str, Path] | None:
        """``{"train": folder, "select": folder}``, or None while one has no name yet (data missing)."""
        found = {role: upstream_dir(task) for role, task in self.requires().items()}
        return None if None in found.values() else found

    def runs_root(self) -> Path:
        return Path(self.runs_dir or bertflow().runs_dir)

    def folder_kind(self) -> str:
        return f"finetune-{self.task}-{self.resolved_head}"

    def pending_payload(self) -> dict:
        """The run's settings: the significant parameters, the head, the checkpoint schema."""
        params = dict(self.get_params())
        settings = {name: value for name, value in self.param_kwargs.items()
                    if params[name].significant and name != "runs_dir"
                    and not (name in _HASHED_WHEN_SET and value is None)}
        return {**settings, "precision": self.named_precision(), "head": self.resolved_head,
                "schema_version": SCHEMA_VERSION}

    def named_precision(self) -> str:
        """The precision in the run folder's name. ``auto`` keeps its name where it trains as it always
        did (fp16 on CUDA, fp32 on a CPU); where it now picks bf16 (a CPU with native bf16 matmuls), the
        name says bf16: such a run is another artifact than the fp32 one (train.config.choose_precision)."""
        if self.precision != "auto":
            return self.precision
        cuda = self.device != "cpu" and visible_cuda_devices() > 0
        chosen, _ = choose_precision("auto", "cuda" if cuda else "cpu", not cuda and cpu_native_bf16())
        return "auto" if chosen == ("fp16" if cuda else "fp32") else chosen

    def name_payload(self) -> dict | None:
        folders = self.feature_dirs()
        if folders is None:
            return None
        # Content-addressed features folders: new data or prep settings give a new run folder.
        return {**self.pending_payload(), "features": {role: folder.name for role, folder in folders.items()}}

    @property
    def run_dir(self) -> Path:
        """The run folder (prep.folders.RunFolder)."""
        return self.out_dir

    def train_config(self) -> TrainConfig:
        """The run's TrainConfig (world size and device resolved by the launched trainer)."""
        values = {name: getattr(self, name) for name in self._train_fields()}
        folders = self.feature_dirs()
        select = folders.get("select")
        config = TrainConfig(**{**values, "run_dir": str(self.run_dir), "head": self.resolved_head,
                                "features_dir": str(folders["train"]),
                                "eval_features_dir": str(select) if select is not None else None,
                                "resume": RunFolder(self.run_dir).last_checkpoint.is_file(), "progress_bar": False})
        return config.for_task(get_task(self.task).train)

    @classmethod
    def _train_fields(cls) -> list[str]:
        names = {f.name for f in dataclasses.fields(TrainConfig)} - {"run_dir", "features_dir", "eval_features_dir"}
        return [name for name, _ in cls.get_params() if name in names]

    def run(self):
        # One trainer per run folder: a concurrent run of this task waits here, then finds it done
        # (as does a run whose output was made after the scheduler looked, its data missing then).
        with artifact_lock(self.run_dir, f"training ({self.task_id})"):
            if not self.complete():
                self._train()

    def _train(self):
        check_world_size(self.world_size, self.device)
        run_dir = self.ready_dir()
        run_dir.mkdir(parents=True, exist_ok=True)
        # A crashed attempt's half-written files (a checkpoint's .last.pt.tmp-<pid>, a model folder's
        # .model.tmp-<pid>-<id>): their writers are gone, and this task holds the folder's lock.
        remove_stale_temps(run_dir, recursive=True)
        config_file = RunFolder(run_dir).launch_config  # what the task hands python -m train --config
        write_json_atomic(config_file, self.train_config().to_dict())
        argv = ["--config", str(config_file)]
        with self._claimed_gpus() as env:
            self._run_and_report(launch_command(argv, self.world_size), run_dir, env)

    @contextlib.contextmanager
    def _claimed_gpus(self):
        """The trainer's environment: on a GPU machine, ``world_size`` GPUs held for this run alone
        (train.gpus.claimed_gpus: lock files under ``<runs_dir>/.gpu-claims``), so two Luigi
        workers' trainings never share a GPU; None (this process's environment) on a CPU run."""
        if self.device == "cpu" or visible_cuda_devices() == 0:
            yield None
            return
        env = dict(os.environ)
        claims = Path(self.runs_dir or bertflow().runs_dir) / ".gpu-claims"
        with contextlib.ExitStack() as stack:
            try:
                line = stack.enter_context(claimed_gpus(self.world_size, claims, env, say=say))
            except NvmlUnavailable as err:  # GPUs that NVML cannot see (not NVIDIA): no choice to make
                say(f"{self.task_family}: GPUs not claimed: {err}")
                yield None
                return
            say(f"{self.task_family}: {line}")
            yield env

    def _run_and_report(self, command: list[str], run_dir: Path, env: dict | None = None) -> None:
        console = TrainingReporter(self.task_family, self.global_batch_size)

        def report() -> None:
            progress = read_progress(run_dir)
            self._report(progress)
            console(progress)

        run_logged(command, RunFolder(run_dir).train_log, "training", env=env, on_poll=report,
                   poll_seconds=_POLL_SECONDS)
        self._report(read_progress(run_dir))

    def _report(self, progress: dict | None) -> None:
        if not progress:
            return
        total = max(int(progress.get("total_steps") or 1), 1)
        self.set_progress_percentage(int(100 * int(progress.get("step", 0)) / total))
        loss = progress.get("loss")
        self.set_status_message(
            f"{progress.get('phase', 'train')}: step {progress.get('step')}/{total}"
            + (f", loss {loss:.4f}" if isinstance(loss, (int, float)) else "")
        )


class FineTunedTask(FineTuned):
    """Base of the generated ``<Task>FineTuned`` classes (pipeline.generated): FineTuned with its own
    luigi.cfg section."""

    @classmethod
    def class_attributes(cls, spec) -> dict:
        """What task ``spec``'s generated class sets: its name as the default ``task``."""
        return {"task": luigi.ChoiceParameter(choices=task_names(), default=spec.name)}


FINETUNED: dict[str, type[FineTunedTask]] = {}  # task name -> its <Task>FineTuned, filled by pipeline.generated
