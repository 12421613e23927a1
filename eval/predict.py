"""Predictions on new data: a finished run applied to inputs without answers or labels.

    python -m eval predict squad --model runs/finetune-squad-span-<hash> --data questions.json --out runs/predict-squad
    python -m eval predict textclass --model RUN_DIR --data new.csv --text-column Text --out runs/predict-news
    luigi --module pipeline Predict --task textclass --run-dir RUN_DIR --data new.csv --local-scheduler

    from eval.api import load_predictor
    predictor = load_predictor("runs/finetune-squad-span-<hash>")   # the model loads once
    predictor.predict([{"question": "Who?", "context": "..."}])      # [{"id", "answer", "score", "start", "end"}]

The engine knows no task: it receives the run's task's spec, and its :class:`tasks.spec.PredictSpec`
says the rest. The new file is prepared by the task's own ``prepare`` (``labelled=False``) with the
run's tokenizer (its ``model/`` folder) and the run's prep settings (its training features'
recorded config, with the task's eval-time changes), in a temporary folder; the task's ``predict``
then runs the evaluation's own inference and decoding on those features. A labelled file with its
labels removed therefore gets exactly the predictions evaluation made on it (at the same batch
size: batches padded otherwise move float32 results in their last digits).

:func:`run_prediction` writes an output folder atomically (prep.folders.PredictFolder): the task's
files in its usual format, ``summary.json`` (counts, the inputs prep skipped with their reasons,
the run and the data with their sha256, the settings) and ``manifest.json`` (last).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from eval.inference import check_model_dir, load_model, pad_id, read_train_config
from prep.artifact import atomic_output_dir, sha256_file, write_json_atomic
from prep.features import open_features
from prep.folders import FeaturesFolder, PredictFolder, RunFolder
from tasks.spec import InputMismatchError, PredictContext, PredictOutcome

SCHEMA_VERSION = 1
log = logging.getLogger(__name__)

Progress = Callable[..., None]


def recorded_features_config(train_config: dict) -> tuple[dict, str]:
    """``(config, source)``: the prep config of the run's training features, read from their manifest
    (train_config.json's ``features_dir``), or ``({}, <train_config.json>)`` when that folder is gone."""
    folder = train_config.get("features_dir")
    if folder:
        path = FeaturesFolder(folder).manifest
        try:
            return dict(json.loads(path.read_text(encoding="utf-8")).get("config") or {}), str(path)
        except (OSError, json.JSONDecodeError, AttributeError):
            pass
    return {}, RunFolder.TRAIN_CONFIG


def make_options(part, values: dict | None):
    """The task's predict options from ``values`` (its fields; None where the task has none)."""
    values = {key: value for key, value in (values or {}).items() if value is not None}
    if part.options is None:
        if values:
            raise ValueError(f"this task takes no input options, got {', '.join(sorted(values))}")
        return None
    return part.options(**values)


@dataclass
class Prediction:
    """One file's predictions: the task's outcome, the new data's features manifest, the prep config used."""

    outcome: PredictOutcome
    manifest: dict
    prep_config: Any
    options: Any


class Predictor:
    """A finished run, loaded once, that predicts files (:meth:`predict_file`) or lists of plain inputs
    (:meth:`predict`) for the task whose spec it is given (``python -m eval predict``, ``Predict`` and
    :func:`eval.api.load_predictor` resolve it). ``config`` is the task's eval config (decoding,
    pooling, batch size; default: its defaults); ``nproc`` the prep processes.
    """

    def __init__(self, spec, run_dir: str | Path, config=None, device: str = "auto", nproc: int = 1):
        from train.dist import resolve_device

        if spec.eval.predict is None:
            raise ValueError(f"task {spec.name} makes no predictions on new data (no PredictSpec)")
        self.spec, self.part = spec, spec.eval.predict
        self.run_dir = check_model_dir(run_dir)
        self.train_config = read_train_config(self.run_dir)
        if self.train_config.get("task") not in (None, spec.name):
            raise InputMismatchError(f"{run_dir} was trained for {self.train_config.get('task')!r}, not {spec.name!r}")
        self.config = config if config is not None else spec.eval.config()
        self.device = resolve_device(device)
        self.nproc = nproc
        self.features_config, self.features_config_source = recorded_features_config(self.train_config)
        self.model, _ = load_model(self.run_dir, spec.train, self.device)
        self.pad_id = pad_id(self.run_dir)

    def prep_config(self, options=None):
        """The prep config new data is built with (the run's, with the task's eval-time settings)."""
        return self.part.prep_config(self.train_config, self.features_config, options)

    def predict_file(self, data_path: str | Path, options=None, *, work_dir: str | Path | None = None,
                     prep_progress: Progress | None = None, progress: Progress | None = None) -> Prediction:
        """Predict every input of ``data_path`` (read with the task's ``options``); the features are
        built in a temporary folder under ``work_dir`` (default: the system's) and removed after."""
        data_path = Path(data_path)
        if not data_path.exists():
            raise FileNotFoundError(f"data file not found: {data_path}")
        prep_config = self.prep_config(options)
        with tempfile.TemporaryDirectory(dir=work_dir, prefix=".predict-features-") as scratch:
            folder = Path(scratch) / "features"
            manifest = self.spec.prep.prepare(data_path, folder, RunFolder(self.run_dir).model, prep_config,
                                              nproc=self.nproc, mode="merge", progress=prep_progress,
                                              labelled=False)
            counts = manifest["counts"]
            log.info("%s: %d features from %d/%d inputs (%d skipped: %s)", data_path.name, counts["features_out"],
                     counts["examples_converted"], counts["examples_in"], counts["examples_skipped"],
                     manifest["skip_reasons"] or "none")
            context = PredictContext(model=self.model, features=open_features(folder), manifest=manifest,
                                     data_path=data_path, config=self.config, device=self.device, pad_id=self.pad_id,
                                     train_config=self.train_config, progress=progress)
            outcome = self.part.predict(context)
        return Prediction(outcome=outcome, manifest=manifest, prep_config=prep_config, options=options)

    def predict(self, inputs) -> list[dict]:
        """One plain dict per input, in input order (the task's module docstring says which keys).

        The inputs are written to a temporary file of the task's input format and go the file's way.
        """
        inputs = list(inputs)
        if not inputs:
            return []
        with tempfile.TemporaryDirectory(prefix="bertflow-predict-") as scratch:
            path, options = self.part.write_inputs(inputs, Path(scratch), self.train_config)
            return self.predict_file(path, options, work_dir=scratch).outcome.records

    def describe_run(self) -> dict:
        """The run folder and the content hashes of what predicts."""
        run = RunFolder(self.run_dir)
        return {"run_dir": str(run.path.resolve()), "name": run.path.resolve().name,
                "head_sha256": sha256_file(run.head), "train_config_sha256": sha256_file(run.train_config),
                "encoder_weights_sha256": {p.name: sha256_file(p) for p in sorted(run.model.glob("*.safetensors"))},
                "task": self.spec.name, "head": self.train_config.get("head")}


def _as_dict(value) -> dict | None:
    return None if value is None else dataclasses.asdict(value)


def prediction_summary(predictor: Predictor, prediction: Prediction, data_path: Path, seconds: float) -> dict:
    """summary.json: what was predicted from what, with which settings, and every input left out."""
    manifest = prediction.manifest
    counts = manifest["counts"]
    return {
        "schema_version": SCHEMA_VERSION,
        "task": predictor.spec.name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": predictor.describe_run(),
        "data": {"path": str(Path(data_path).resolve()), "sha256": (manifest.get("input") or {}).get("sha256"),
                 "bytes": (manifest.get("input") or {}).get("bytes")},
        "config": {**predictor.config.to_dict(), "device": predictor.device},
        "options": _as_dict(prediction.options),
        "prep_config": _as_dict(prediction.prep_config),
        "prep_config_from": predictor.features_config_source,
        "counts": {"inputs": counts["examples_in"], "predicted": counts["examples_converted"],
                   "skipped": counts["examples_skipped"], "features": counts["features_out"],
                   **prediction.outcome.counts},
        "skip_reasons": manifest.get("skip_reasons") or {},
        "skipped": manifest.get("skipped") or [],
        "seconds": round(seconds, 3),
    }


def write_prediction_folder(out_dir: str | Path, prediction: Prediction, summary: dict) -> dict:
    """The task's files, summary.json, then manifest.json, published in one rename."""
    with atomic_output_dir(out_dir, reuse_if_made_while_waiting=True) as tmp:
        if tmp is None:  # a concurrent run of the same prediction wrote out_dir while we waited
            return json.loads(PredictFolder(out_dir).summary.read_text(encoding="utf-8"))
        prediction.outcome.write_files(tmp)
        summary["files"] = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        folder = PredictFolder(tmp)
        write_json_atomic(folder.summary, summary)
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        write_json_atomic(folder.manifest, {
            "schema_version": SCHEMA_VERSION, "stage": "predict", "task": summary["task"],
            "files": [{"path": str(p.relative_to(tmp)), "sha256": sha256_file(p), "bytes": p.stat().st_size}
                      for p in files],
        })
    return summary


def run_prediction(spec, run_dir: str | Path, data_path: str | Path, out_dir: str | Path, config=None, options=None,
                   device: str = "auto", nproc: int = 1, prep_progress: Progress | None = None,
                   progress: Progress | None = None) -> dict:
    """Predict the inputs of ``data_path`` with the run ``run_dir`` of the task ``spec`` (resolved by the
    entry point) into ``out_dir``; returns its summary.json payload.

    ``config``: the task's eval config; ``options``: its predict options (how to read the file).
    ``prep_progress(chunks done, chunks, features)`` and ``progress(batches done, batches)`` report
    on long inputs.
    """
    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    predictor = Predictor(spec, run_dir, config, device, nproc)
    prediction = predictor.predict_file(data_path, options, work_dir=out_dir.parent, prep_progress=prep_progress,
                                        progress=progress)
    summary = prediction_summary(predictor, prediction, Path(data_path), time.perf_counter() - started)
    return write_prediction_folder(out_dir, prediction, summary)


def load_summary(out_dir: str | Path) -> dict:
    """The summary.json of a finished prediction folder."""
    folder = PredictFolder(out_dir)
    if not folder.manifest.is_file() or not folder.summary.is_file():
        raise FileNotFoundError(f"{folder.path}: not a finished prediction (no {folder.MANIFEST} / {folder.SUMMARY})")
    return json.loads(folder.summary.read_text(encoding="utf-8"))


def tqdm_batches(disable: bool | None = None) -> Progress:
    """A ``progress(done, total)`` callback drawing a tqdm bar of inference batches (for the CLI)."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="batch", desc="predict", disable=disable, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update
