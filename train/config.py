"""The one configuration object of the training stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

TASKS = ("squad", "gap")
GAP_HEADS = ("concat", "multiply", "segment")
SQUAD_HEAD = "span"
PRECISIONS = ("fp16", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")

# Fields that define what a run computes: a resume must see the same values, and the
# pipeline hashes them into the output path. world_size and per_device_batch_size are not
# among them: they only change how a global batch is split (see TrainConfig.accumulation_steps).
RUN_DEFINING_FIELDS = (
    "task", "head", "model_dir", "features_dir", "precision", "global_batch_size", "epochs",
    "max_steps", "lr", "warmup_ratio", "weight_decay", "max_grad_norm", "adam_beta1",
    "adam_beta2", "adam_eps", "seed", "length_bucketing", "bucket_window_steps", "select_best",
    "calibrate",
)


@dataclass(frozen=True)
class TrainConfig:
    """Everything one fine-tuning run needs; built once at the entry point, never mutated.

    The global batch (sequences per optimizer step) is fixed whatever the world size:
    ``global_batch_size = per_device_batch_size * world_size * accumulation_steps()``.
    """

    task: str
    features_dir: str
    out_dir: str
    model_dir: str  # a local BertModel folder (the entry point fills in the packaged MiniLM)
    head: str = "multiply"  # GAP: concat | multiply | segment; SQuAD: span
    eval_features_dir: str | None = None
    select_best: bool = False  # end on the epoch with the lowest eval loss (needs eval features)
    calibrate: bool = False  # GAP: fit a softmax temperature on the eval features at the end
    precision: str = "fp16"
    global_batch_size: int = 32
    per_device_batch_size: int | None = None  # None: global / world size, capped at 32
    world_size: int = 1
    epochs: int = 2
    max_steps: int | None = None  # caps the run (smoke tests, benchmarks)
    lr: float = 3e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    seed: int = 42
    length_bucketing: bool = True
    bucket_window_steps: int = 50  # optimizer steps whose sequences are sorted together
    pad_to_multiple_of: int = 8
    num_workers: int = 0
    device: str = "auto"
    log_every_n_steps: int = 10
    save_every_n_steps: int | None = 200  # plus one at every epoch end and at the end
    nvtx: bool = False
    resume: bool = False
    progress_bar: bool = True

    def __post_init__(self):
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.task == "squad" and self.head != SQUAD_HEAD:
            raise ValueError(f"task squad has one head, {SQUAD_HEAD!r}; got head={self.head!r}")
        if self.task == "gap" and self.head not in GAP_HEADS:
            raise ValueError(f"GAP head must be one of {GAP_HEADS}, got {self.head!r}")
        if (self.select_best or self.calibrate) and not self.eval_features_dir:
            raise ValueError("select_best and calibrate need eval features (--eval-features): "
                             "they choose on held-out data, never on the training set")
        if self.calibrate and self.task != "gap":
            raise ValueError("calibrate is for the GAP classifier; SQuAD has its own no-answer threshold")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("global_batch_size", "world_size", "epochs", "log_every_n_steps",
                     "pad_to_multiple_of", "bucket_window_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("per_device_batch_size", "max_steps", "save_every_n_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or unset, got {value}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise ValueError(f"lr and max_grad_norm must be > 0: lr={self.lr}, max_grad_norm={self.max_grad_norm}")
        per_step = self.micro_batch_size() * self.world_size
        if self.global_batch_size % per_step:
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of "
                f"per_device_batch_size {self.micro_batch_size()} x world_size {self.world_size}"
            )

    @staticmethod
    def default_head(task: str) -> str:
        return SQUAD_HEAD if task == "squad" else "multiply"

    def micro_batch_size(self) -> int:
        """Sequences per forward pass on one device."""
        if self.per_device_batch_size is not None:
            return self.per_device_batch_size
        per_rank = max(1, self.global_batch_size // self.world_size)
        if per_rank <= 32:
            return per_rank
        # The largest divisor of the per-rank share that is at most 32 keeps the global batch exact.
        return max(d for d in range(1, 33) if per_rank % d == 0)

    def accumulation_steps(self) -> int:
        """Micro-batches per optimizer step on each rank (derived, never a separate knob)."""
        return self.global_batch_size // (self.micro_batch_size() * self.world_size)

    def sequences_per_rank_per_step(self) -> int:
        return self.micro_batch_size() * self.accumulation_steps()

    def run_defining(self) -> dict:
        return {name: getattr(self, name) for name in RUN_DEFINING_FIELDS}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)
