"""The contract of bertflow's folders: every file a features, run, evaluation or prediction folder holds, named once.

Writers and readers in every package use these names (no file-name literals elsewhere), so a
rename is one line here and a reader can never look for a file under another name than its
writer used. Torch-free: the Luigi side, the prep pool and the tools import it cheaply.

    FeaturesFolder(path).manifest        # prep: Arrow files + manifest.json (written last)
    RunFolder(path).metrics              # python -m train --out: model/, head, configs, checkpoints, logs
    EvalFolder(path).metrics             # python -m eval <task> --out: predictions, metrics, report, manifest
    PredictFolder(path).summary          # python -m eval predict <task> --out: the task's files, summary, manifest
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"  # a features or evaluation folder's last file: the folder is complete once it exists


@dataclass(frozen=True)
class FeaturesFolder:
    """What prep writes: Arrow IPC files and ``manifest.json``.

    The manifest lists the Arrow files (readers take their names from there); writers name them
    with the templates below, from the stem ``<dataset>-<split>``.
    """

    path: Path

    MANIFEST = MANIFEST
    STEM = "{dataset}-{split}"
    MERGED_FILE = "{stem}.arrow"  # merge mode: one file
    WORKER_FILE = "{stem}-w{worker:03d}.arrow"  # shards mode: one per pool worker
    EMPTY_FILE = "{stem}-empty.arrow"  # shards mode without a single row: the schema alone

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST


@dataclass(frozen=True)
class RunFolder:
    """What a fine-tune (``python -m train --out DIR``) writes, and the pipeline around it.

    ``model/`` (the encoder, or the task's Hugging Face model, with the tokenizer files),
    ``head.safetensors``, ``train_config.json`` (the resolved config and what the model was built
    from), ``checkpoints/last.pt`` and ``checkpoints/best.pt``, ``tb/`` (TensorBoard),
    ``progress.json`` (rewritten as it trains), ``metrics.json`` (written last: the run is finished
    once it exists); the Luigi task adds ``launch_config.json`` (the TrainConfig it hands the
    trainer) and ``train.log``.
    """

    path: Path

    MODEL = "model"
    HEAD = "head.safetensors"
    TRAIN_CONFIG = "train_config.json"
    LAUNCH_CONFIG = "launch_config.json"
    METRICS = "metrics.json"
    PROGRESS = "progress.json"
    TRAIN_LOG = "train.log"
    TENSORBOARD = "tb"
    CHECKPOINTS = "checkpoints"
    LAST_CHECKPOINT = "last.pt"
    BEST_CHECKPOINT = "best.pt"

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def model(self) -> Path:
        return self.path / self.MODEL

    @property
    def head(self) -> Path:
        return self.path / self.HEAD

    @property
    def train_config(self) -> Path:
        return self.path / self.TRAIN_CONFIG

    @property
    def launch_config(self) -> Path:
        return self.path / self.LAUNCH_CONFIG

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def progress(self) -> Path:
        return self.path / self.PROGRESS

    @property
    def train_log(self) -> Path:
        return self.path / self.TRAIN_LOG

    @property
    def tensorboard(self) -> Path:
        return self.path / self.TENSORBOARD

    @property
    def checkpoints(self) -> Path:
        return self.path / self.CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoints / self.LAST_CHECKPOINT

    @property
    def best_checkpoint(self) -> Path:
        return self.checkpoints / self.BEST_CHECKPOINT


@dataclass(frozen=True)
class EvalFolder:
    """What an evaluation (``python -m eval <task> --out DIR``) writes: the task's prediction files,
    ``metrics.json``, ``report.md`` with its PNG plots, and ``manifest.json`` (written last)."""

    path: Path

    METRICS = "metrics.json"
    REPORT = "report.md"
    MANIFEST = MANIFEST

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def metrics(self) -> Path:
        return self.path / self.METRICS

    @property
    def report(self) -> Path:
        return self.path / self.REPORT

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST


@dataclass(frozen=True)
class PredictFolder:
    """What a prediction on new data (``python -m eval predict <task> --out DIR``, the Luigi ``Predict``)
    writes: the task's files in its usual format (named by the task), ``summary.json`` (counts, the
    inputs skipped with their reasons, the run and the data with their sha256, the settings) and
    ``manifest.json`` (written last)."""

    path: Path

    SUMMARY = "summary.json"
    MANIFEST = MANIFEST

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @property
    def summary(self) -> Path:
        return self.path / self.SUMMARY

    @property
    def manifest(self) -> Path:
        return self.path / MANIFEST
