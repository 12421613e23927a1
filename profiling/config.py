"""The one configuration object of the profiling stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from train.config import DEVICES, PRECISIONS

BACKENDS = ("auto", "nsys", "torch")


@dataclass(frozen=True)
class ProfileConfig:
    """What to profile and how; built once at the entry point (CLI or Luigi task).

    The run trains ``warmup_steps + active_steps + 1`` optimizer steps: ``warmup_steps`` to reach
    steady state (allocator, DDP bucket rebuild, first-step kernel selection), ``active_steps``
    recorded, and one more so that the end-of-run work (final log line, checkpoint) stays out of
    the window.
    """

    task: str
    model_dir: str  # the entry point fills in the packaged MiniLM
    features_dir: str | None = None  # None: a synthetic feature set sized for the run
    world_size: int = 1
    warmup_steps: int = 3
    active_steps: int = 5
    precision: str = "auto"  # as python -m train: fp16 on CUDA, fp32 on CPU
    global_batch_size: int = 32
    per_device_batch_size: int | None = None
    head: str | None = None  # None: the task's default head
    backend: str = "auto"  # nsys where nsys and CUDA exist, torch.profiler otherwise
    device: str = "auto"
    scaling: bool = True  # also time world size 1 vs 2 (same global batch) without a profiler
    seed: int = 42
    synthetic_seq_length: int = 128  # longest synthetic row; rows run from half of it up
    cpu_threads_per_process: int | None = None  # None: the CPUs split evenly over the processes
    top_k: int = 15
    prep_scaling_png: str | None = "docs/benchmarks/prep_scaling.png"

    def __post_init__(self):
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.precision not in (*PRECISIONS, "auto"):
            raise ValueError(f"precision must be one of {(*PRECISIONS, 'auto')}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("world_size", "warmup_steps", "active_steps", "global_batch_size", "top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("per_device_batch_size", "cpu_threads_per_process"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or unset, got {value}")
        if self.synthetic_seq_length < 16:
            raise ValueError(f"synthetic_seq_length must be >= 16, got {self.synthetic_seq_length}")
        for world_size in self.scaling_world_sizes() if self.scaling else (self.world_size,):
            if self.global_batch_size % world_size:
                raise ValueError(f"global_batch_size {self.global_batch_size} does not split over {world_size} ranks")

    def total_steps(self) -> int:
        return self.warmup_steps + self.active_steps + 1

    def scaling_world_sizes(self) -> tuple[int, int]:
        """World size 1 against the profiled size (2 when the profile itself is single-process)."""
        return 1, max(2, self.world_size)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
