"""``FineTuned``: a fine-tuned model folder, produced by ``python -m train`` in a subprocess.

    luigi --module pipeline FineTuned --task gap --features-dir runs/gap-dev-<hash> \\
        --eval-features-dir runs/gap-val-<hash> --world-size 2 --local-scheduler

Every field of :class:`train.config.TrainConfig` is a parameter of the same name; the task writes
the run's config to ``<run folder>/launch_config.json`` and launches
``python -m train --config <that file>``.

The run folder is ``<out_dir>/finetune-<task>-<head>-<hash>``, the hash covering the
parameters that change the result (world_size, per_device_batch_size, device and num_workers
are ``significant=False``: the global batch is fixed, so they only change speed). The
trainer is launched as a fresh process (``torchrun --standalone`` for world_size > 1), never
forked from this one; a folder left by a crashed attempt is continued with ``--resume``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import luigi

from train.checkpoint import SCHEMA_VERSION, checkpoint_path
from pipeline.params import dataclass_parameters
from tasks import task_names
from train.config import TrainConfig
from prep.artifact import write_json_atomic
from train.launch import check_world_size, launch_command, read_progress, run_logged, visible_cuda_devices

_POLL_SECONDS = 5.0
LAUNCH_CONFIG = "launch_config.json"  # what the task hands python -m train --config


# TrainConfig fields that only change speed or logging (the global batch is fixed whatever the
# world size) stay out of the run folder's hash; the launcher sets world_size, the task's
# own out_dir names the runs root, and resume is decided from the folder.
_INSIGNIFICANT = ("per_device_batch_size", "device", "num_workers", "pad_to_multiple_of", "log_every_n_steps",
                  "save_every_n_steps", "nvtx", "progress_bar")


class FineTuned(luigi.Task):
    """A fine-tuned run folder; every TrainConfig field is a parameter (``--FineTuned-weight-decay 0``)."""

    locals().update(dataclass_parameters(
        TrainConfig, skip=("out_dir", "resume", "progress_bar"), insignificant=(*_INSIGNIFICANT, "world_size"),
        choices={"task": task_names()},
    ))
    out_dir = luigi.Parameter(default="runs", description="the runs root; the run folder is named inside it")

    @property
    def resources(self):
        return {"gpu": self.world_size} if self.device != "cpu" and visible_cuda_devices() > 0 else {}

    @property
    def resolved_head(self) -> str:
        return self.head or TrainConfig.default_head(self.task)

    @property
    def run_dir(self) -> Path:
        significant = {
            name: value for name, value in self.param_kwargs.items()
            if self._params_by_name()[name].significant and name != "out_dir"
        }
        significant["head"] = self.resolved_head
        significant["schema_version"] = SCHEMA_VERSION
        digest = hashlib.sha256(json.dumps(significant, sort_keys=True, default=str).encode()).hexdigest()[:10]
        return Path(self.out_dir) / f"finetune-{self.task}-{self.resolved_head}-{digest}"

    @classmethod
    def _params_by_name(cls) -> dict:
        return dict(cls.get_params())

    def output(self):
        return luigi.LocalTarget(str(self.run_dir / "metrics.json"))

    def train_config(self) -> TrainConfig:
        """The run's TrainConfig (world size and device resolved by the launched trainer)."""
        values = {name: getattr(self, name) for name in self._train_fields()}
        return TrainConfig(**{**values, "out_dir": str(self.run_dir), "head": self.resolved_head,
                              "resume": checkpoint_path(self.run_dir).is_file(), "progress_bar": False})

    @classmethod
    def _train_fields(cls) -> list[str]:
        names = {f.name for f in dataclasses.fields(TrainConfig)}
        return [name for name, _ in cls.get_params() if name in names and name != "out_dir"]

    def run(self):
        check_world_size(self.world_size, self.device)
        run_dir = self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        config_file = run_dir / LAUNCH_CONFIG
        write_json_atomic(config_file, self.train_config().to_dict())
        argv = ["--config", str(config_file)]
        self._run_and_report(launch_command(argv, self.world_size), run_dir)

    def _run_and_report(self, command: list[str], run_dir: Path) -> None:
        run_logged(command, run_dir / "train.log", "training",
                   on_poll=lambda: self._report(read_progress(run_dir)), poll_seconds=_POLL_SECONDS)
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
