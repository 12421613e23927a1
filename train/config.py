"""The one configuration object of the training stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

PRECISIONS = ("fp16", "bf16", "fp32")
DEVICES = ("auto", "cpu", "cuda")

# Fields that define what a run computes: a resume must see the same values, and the
# pipeline hashes them into the output path. world_size and per_device_batch_size are not
# among them: they only change how a global batch is split (see TrainConfig.accumulation_steps).
RUN_DEFINING_FIELDS = (
    "task", "head", "model_dir", "features_dir", "precision", "global_batch_size", "epochs",
    "max_steps", "lr", "warmup_ratio", "weight_decay", "max_grad_norm", "adam_beta1",
    "adam_beta2", "adam_eps", "seed", "length_bucketing", "bucket_window_steps", "select_best",
    "calibrate", "dropout", "early_stopping_patience", "attention_dropout",
)


def choose_precision(requested: str, device_type: str, cpu_native_bf16: bool) -> tuple[str, str]:
    """``(precision, why)``: ``requested`` unless it is ``auto``, which takes what the device does
    best: fp16 autocast with a GradScaler on CUDA; on a CPU, bf16 autocast where oneDNN runs bf16
    matmuls natively (AVX512-BF16 or AMX: measured 2.4x the fp32 matmul rate on a 2-core AVX512-BF16
    EPYC), else fp32 (such a CPU emulates both half types, several times slower than fp32)."""
    if requested != "auto":
        return requested, "asked for"
    if device_type == "cuda":
        return "fp16", "auto on CUDA: fp16 autocast and a GradScaler"
    if cpu_native_bf16:
        return "bf16", "auto on a CPU with native bf16 matmuls (AVX512-BF16 or AMX): bf16 autocast"
    return "fp32", "auto on a CPU without native bf16 matmuls: half precision would be emulated, slower than fp32"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one fine-tuning run needs; built once at the entry point, never mutated.

    The global batch (sequences per optimizer step) is fixed whatever the world size:
    ``global_batch_size = per_device_batch_size * world_size * accumulation_steps()``.
    """

    task: str = field(metadata={"help": "a registered task (tasks/<name>/)"})
    features_dir: str = field(metadata={"help": "prep output folder with the training features"})
    run_dir: str = field(metadata={"help": "the run folder: checkpoints, model, logs, metrics"})
    model_dir: str | None = field(
        default=None, metadata={"help": "pretrained encoder folder, or a Hugging Face Hub id (org/name[@revision]) "
                                        "fetched into the Hugging Face cache (default: the packaged MiniLM)"})
    head: str | None = field(default=None, metadata={"help": "one of the task's heads (default: its default head)"})
    eval_features_dir: str | None = field(
        default=None, metadata={"help": "held-out features evaluated at every epoch end"})
    select_best: bool = field(default=False, metadata={
        "help": "end on the epoch with the lowest eval loss (kept in checkpoints/best.pt; needs eval features)"})
    early_stopping_patience: int | None = field(default=None, metadata={
        "help": "stop once this many held-out evaluations in a row have not lowered the eval loss "
                "(needs eval features; with --select-best the best epoch's weights are kept)"})
    attention_dropout: float | None = field(default=None, metadata={
        "help": "the encoder's attention-probability dropout alone, over --dropout's (0 lets CPU attention take the "
                "fused SDPA kernel: about 2x a MiniLM step on CPU; default: the model's own, 0.1 for BERT)"})
    dropout: float | None = field(default=None, metadata={
        "help": "the encoder's hidden and attention dropout, which the task heads use too "
                "(default: the model's own, 0.1 for BERT / RoBERTa / MPNet)"})
    calibrate: bool = field(default=False, metadata={
        "help": "classifiers: fit a softmax temperature on the eval features after training "
                "(lowers log loss, keeps every prediction)"})
    precision: str = field(default="auto", metadata={
        "help": "fp16 (autocast + GradScaler), bf16, fp32, or auto: fp16 on CUDA; on a CPU bf16 where it has native "
                "bf16 matmuls (AVX512-BF16 / AMX), else fp32 (the run records what it chose and why)",
        "choices": (*PRECISIONS, "auto")})
    global_batch_size: int = field(default=32, metadata={"help": "feature rows per optimizer step, all ranks "
                                                                          "(a sequence; a question for multiple choice)"})
    per_device_batch_size: int | None = field(
        default=None, metadata={"help": "feature rows per forward pass (default: global / world size, at most 32 sequences: "
                                   "8 four-option questions)"})
    world_size: int = field(default=1, metadata={"help": "processes (set by the launcher, not by hand)"})
    epochs: int = field(default=2, metadata={"help": "passes over the training features"})
    max_steps: int | None = field(default=None, metadata={"help": "stop after this many optimizer steps"})
    lr: float = field(default=3e-5, metadata={"help": "peak learning rate (linear warm-up, then linear decay)"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of the steps spent warming up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases / LayerNorm)"})
    max_grad_norm: float = field(default=1.0, metadata={"help": "gradient clipping norm"})
    adam_beta1: float = field(default=0.9, metadata={"help": "AdamW beta1"})
    adam_beta2: float = field(default=0.999, metadata={"help": "AdamW beta2"})
    adam_eps: float = field(default=1e-8, metadata={"help": "AdamW epsilon"})
    seed: int = field(default=42, metadata={"help": "seeds the head, the data order and dropout"})
    length_bucketing: bool = field(default=True, metadata={"help": "sort rows by length within windows of steps"})
    bucket_window_steps: int = field(default=50, metadata={"help": "optimizer steps whose rows are sorted together"})
    pad_to_multiple_of: int = field(default=8, metadata={"help": "pad each batch's length up to a multiple of this"})
    num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes (spawned)"})
    device: str = field(default="auto", metadata={"help": "auto (CUDA when available), cpu or cuda",
                                                 "choices": DEVICES})
    log_every_n_steps: int = field(default=10, metadata={"help": "steps between log lines / TensorBoard points"})
    save_every_n_steps: int | None = field(
        default=200, metadata={"help": "checkpoint interval, plus every epoch end and the end (unset or 0: only those)"})
    nvtx: bool = field(default=False, metadata={"help": "NVTX / record_function ranges for profilers"})
    compile: bool = field(default=False, metadata={
        "help": "torch.compile the model (nn.Module.compile: same weights and state dict, speed only)"})
    fast_cpu: bool = field(default=True, metadata={
        "help": "CPU training speed-ups (train/fast_cpu.py): dropout masks from a quarter of torch's random draws "
                "(the same distribution), attention as two matmuls and a softmax, freed memory kept for the next "
                "step; false: the model's own modules and the default allocator. Not with --compile"})
    resume: bool = field(default=False, metadata={"help": "continue from OUT/checkpoints/last.pt"})
    progress_bar: bool = field(default=True, metadata={"help": "a tqdm bar on rank 0"})
    # A hyper-parameter sweep's trial (pipeline/sweep.py): each epoch's held-out figure is reported
    # to it, and the run stops when the study prunes it. Not run-defining: a trial's run folder is
    # the same as that of a plain run with the same settings.
    trial_storage: str | None = field(default=None, metadata={
        "help": "Optuna storage URL of the study this run is a trial of (e.g. sqlite:///runs/sweeps.db)"})
    trial_study: str | None = field(default=None, metadata={"help": "that study's name"})
    trial_number: int | None = field(default=None, metadata={"help": "the trial's number in that study"})

    def __post_init__(self):
        """Checks that need no task; :meth:`for_task` adds the task's (heads, calibration, batch shape)."""
        if self.save_every_n_steps == 0:
            object.__setattr__(self, "save_every_n_steps", None)
        if (self.select_best or self.calibrate) and not self.eval_features_dir:
            raise ValueError("select_best and calibrate need eval features (--eval-features): "
                             "they choose on held-out data, never on the training set")
        if self.early_stopping_patience is not None and not self.eval_features_dir:
            raise ValueError("early_stopping_patience needs eval features (--eval-features): "
                             "it stops on the held-out loss, never on the training set")
        if self.precision not in (*PRECISIONS, "auto"):
            raise ValueError(f"precision must be one of {(*PRECISIONS, 'auto')}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        for name in ("global_batch_size", "world_size", "epochs", "log_every_n_steps",
                     "pad_to_multiple_of", "bucket_window_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("per_device_batch_size", "max_steps", "save_every_n_steps", "early_stopping_patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or unset, got {value}")
        trial = (self.trial_storage, self.trial_study, self.trial_number)
        if any(value is not None for value in trial) and None in trial:
            raise ValueError("trial_storage, trial_study and trial_number go together (a sweep trial), "
                             f"got {trial}")
        if self.num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {self.num_workers}")
        for name in ("dropout", "attention_dropout"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be in [0, 1) or unset, got {value}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.lr <= 0 or self.max_grad_norm <= 0:
            raise ValueError(f"lr and max_grad_norm must be > 0: lr={self.lr}, max_grad_norm={self.max_grad_norm}")
        if self.per_device_batch_size is not None:
            self._check_batch_shape(self.per_device_batch_size)

    def _check_batch_shape(self, micro: int) -> None:
        if self.global_batch_size % (micro * self.world_size):
            raise ValueError(
                f"global_batch_size {self.global_batch_size} is not a multiple of "
                f"per_device_batch_size {micro} x world_size {self.world_size}"
            )

    def for_task(self, spec) -> "TrainConfig":
        """This config checked against the task's training part (a :class:`tasks.spec.TrainSpec`): the
        head (unset: the task's default) is one of its heads, calibration needs a calibratable head,
        and the micro-batch divides the global batch."""
        config = self if self.head is not None else self.replace(head=spec.default_head)
        if config.head not in spec.heads:
            raise ValueError(f"task {config.task} has the heads {spec.heads}; got head={config.head!r}")
        if config.calibrate and not spec.calibratable:
            raise ValueError(f"calibrate fits a classifier's softmax temperature; task {config.task} has none")
        config._check_batch_shape(config.micro_batch_size(spec.sequences_per_row))
        return config

    def resolved(self, device_type: str, model_dir: str | None = None, cpu_native_bf16: bool = False) -> "TrainConfig":
        """The config a run uses: precision ``auto`` resolved (:func:`choose_precision`), the encoder
        folder filled in."""
        precision, _ = choose_precision(self.precision, device_type, cpu_native_bf16)
        return self.replace(precision=precision, model_dir=self.model_dir or model_dir)

    def micro_batch_size(self, sequences_per_row: int) -> int:
        """Feature rows per forward pass on one device: by default the per-rank share of the global
        batch, capped so a forward holds at most 32 encoder sequences (``sequences_per_row``: the
        task's sequences per feature row; a multiple-choice row is one sequence per option, so RACE's
        cap is 8 questions, 32 sequences)."""
        if self.per_device_batch_size is not None:
            return self.per_device_batch_size
        cap = max(1, 32 // sequences_per_row)
        per_rank = max(1, self.global_batch_size // self.world_size)
        if per_rank <= cap:
            return per_rank
        # The largest divisor of the per-rank share that is at most the cap keeps the global batch exact.
        return max(d for d in range(1, cap + 1) if per_rank % d == 0)

    def accumulation_steps(self, sequences_per_row: int) -> int:
        """Micro-batches per optimizer step on each rank (derived, never a separate knob)."""
        return self.global_batch_size // (self.micro_batch_size(sequences_per_row) * self.world_size)

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
