"""What a run reports: TensorBoard scalars, a small progress file, and the final metrics.

Only rank 0 writes; other ranks get a disabled logger. Files:
- ``OUT/tb/``: TensorBoard event files (train/loss, train/lr, train/grad_norm,
  train/loss_scale, train/sequences_per_second, train/tokens_per_second, eval/*).
- ``OUT/progress.json``: the latest step, total steps, loss and throughput, rewritten
  atomically; the Luigi task reads it for its progress bar and status message.
- ``OUT/train_config.json``: the resolved config, written at the start (:func:`write_train_config`).
- ``OUT/metrics.json``: written once at the end (see :func:`train.loop.train`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from prep.artifact import write_json_atomic  # noqa: F401 - re-exported for train's writers
from prep.folders import RunFolder
from prep.models import hub_source
from train.dist import DistEnv, all_reduce_sum


class RunLogger:
    def __init__(self, out_dir: str | Path, enabled: bool):
        self.folder = RunFolder(out_dir)
        self.enabled = enabled
        self._writer = None

    @property
    def writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(log_dir=str(self.folder.tensorboard))
        return self._writer

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        for name, value in values.items():
            if value is not None:
                self.writer.add_scalar(name, value, step)

    def progress(self, record: dict) -> None:
        if self.enabled:
            write_json_atomic(self.folder.progress, {**record, "time": time.time()})

    def close(self) -> None:
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None


class TrainClock:
    """Seconds spent in training steps only (eval and checkpoint writes excluded).

    Start/stop synchronise the device so asynchronous CUDA work is charged to the right side.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds = 0.0
        self._started: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def start(self) -> None:
        if self._started is None:
            self._sync()
            self._started = time.perf_counter()

    def stop(self) -> None:
        if self._started is not None:
            self._sync()
            self.seconds += time.perf_counter() - self._started
            self._started = None

    def reset(self) -> None:
        self.stop()
        self.seconds = 0.0


class LossWindow:
    """The training loop's loss and token counts since the last log line; ``flush`` all-reduces them over ranks."""

    def __init__(self, device: torch.device):
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.loss = torch.zeros((), dtype=torch.float32, device=self.device)
        self.tokens = self.padded = self.steps = 0
        self.started = time.perf_counter()

    def add_step(self, tokens: int, padded: int) -> None:
        self.tokens += tokens
        self.padded += padded
        self.steps += 1

    def flush(self, env: DistEnv, accum: int, global_batch_size: int) -> dict:
        stats = torch.tensor([self.loss.item(), self.tokens, self.padded], dtype=torch.float64, device=self.device)
        all_reduce_sum(stats, env)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        record = {
            "loss": stats[0].item() / (self.steps * accum * env.world_size),
            "sequences_per_second": self.steps * global_batch_size / elapsed,
            "tokens_per_second": stats[1].item() / elapsed,
            "padding_fraction": 1.0 - stats[1].item() / max(stats[2].item(), 1.0),
        }
        self._reset()
        return record


def write_train_config(config, dataset, is_main: bool, micro: int, accum: int, precision_choice: dict | None = None,
                       schema_version: int | None = None) -> dict:
    """``OUT/train_config.json``: the resolved config and what the model was built from (rank 0 writes it)."""
    record = {
        **config.to_dict(),
        "model_dir": str(Path(config.model_dir).resolve()),
        "model_source": hub_source(config.model_dir),  # a Hub id's {hub_id, revision, commit}; None: a local folder
        "features_dir": str(Path(config.features_dir).resolve()),
        "max_seq_length": dataset.max_seq_length,
        "precision_choice": precision_choice,  # what precision auto chose here, and why
        "micro_batch_size": micro,
        "accumulation_steps": accum,
        "tokenizer": dataset.manifest.get("tokenizer"),
        "data_info": dataset.manifest.get("input") or {},  # what the task's build_model was given
        "schema_version": schema_version,
    }
    if is_main:
        write_json_atomic(RunFolder(config.run_dir).train_config, record)
    return record
