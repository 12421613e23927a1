"""``FineTuned``: a fine-tuned model folder, produced by ``python -m train`` in a subprocess.

    luigi --module pipeline FineTuned --task gap --features-dir runs/gap-dev-<hash> \\
        --eval-features-dir runs/gap-val-<hash> --world-size 2 --local-scheduler

The run folder is ``<out_dir>/finetune-<task>-<head>-<hash>``, the hash covering the
parameters that change the result (world_size, per_device_batch_size, device and num_workers
are ``significant=False``: the global batch is fixed, so they only change speed). The
trainer is launched as a fresh process (``torchrun --standalone`` for world_size > 1), never
forked from this one; a folder left by a crashed attempt is continued with ``--resume``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import luigi

from prep.locking import artifact_lock
from train.checkpoint import SCHEMA_VERSION, checkpoint_path
from train.config import PRECISIONS, TASKS, TrainConfig
from train.launch import (check_world_size, launch_command, read_progress, run_logged, train_argv,
                          visible_cuda_devices)

_POLL_SECONDS = 5.0


class FineTuned(luigi.Task):
    task = luigi.ChoiceParameter(choices=TASKS)
    features_dir = luigi.Parameter()
    out_dir = luigi.Parameter(default="runs")
    model_dir = luigi.OptionalParameter(default=None)  # None: the packaged MiniLM
    eval_features_dir = luigi.OptionalParameter(default=None)
    head = luigi.OptionalParameter(default=None)  # None: multiply for GAP, span for SQuAD
    # auto: fp16 on CUDA, fp32 on CPU (resolved by the trainer; CPUs emulate fp16 matmuls).
    precision = luigi.ChoiceParameter(choices=(*PRECISIONS, "auto"), default="auto")
    global_batch_size = luigi.IntParameter(default=32)
    epochs = luigi.IntParameter(default=2)
    max_steps = luigi.OptionalIntParameter(default=None)
    lr = luigi.FloatParameter(default=3e-5)
    warmup_ratio = luigi.FloatParameter(default=0.1)
    # Both choose on eval_features_dir (the held-out split), never on the test set.
    select_best = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                      description="end on the epoch with the lowest eval loss")
    calibrate = luigi.BoolParameter(default=False, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                    description="GAP: fit a softmax temperature on the eval features")
    seed = luigi.IntParameter(default=42)
    length_bucketing = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    world_size = luigi.IntParameter(default=1, significant=False)
    per_device_batch_size = luigi.OptionalIntParameter(default=None, significant=False)
    device = luigi.ChoiceParameter(choices=("auto", "cpu", "cuda"), default="auto", significant=False)
    num_workers = luigi.IntParameter(default=0, significant=False)

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

    def run(self):
        # One trainer per run folder: a concurrent run of this task waits here, then finds it done.
        with artifact_lock(self.run_dir, f"training ({self.task_id})"):
            if not self.complete():
                self._train()

    def _train(self):
        check_world_size(self.world_size, self.device)
        run_dir = self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        argv = train_argv(
            task=self.task, features=self.features_dir, out=run_dir, model=self.model_dir,
            eval_features=self.eval_features_dir, head=self.resolved_head, precision=self.precision,
            global_batch_size=self.global_batch_size, per_device_batch_size=self.per_device_batch_size,
            epochs=self.epochs, max_steps=self.max_steps, lr=self.lr, warmup_ratio=self.warmup_ratio,
            select_best=self.select_best, calibrate=self.calibrate, seed=self.seed,
            no_bucketing=not self.length_bucketing, device=self.device, num_workers=self.num_workers,
            no_progress_bar=True, resume=checkpoint_path(run_dir).is_file(),
        )
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
