"""The evaluation stage end to end: check inputs, run the task's evaluation, write every output atomically.

``run_evaluation`` is what the CLI (``python -m eval <task>``) and the Luigi task
``pipeline.evaluate.Evaluation`` call. An output folder is written beside its destination
and renamed into place after its ``manifest.json`` (the list of files with their sha256), so a
failed or killed evaluation never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from eval.inference import check_inputs, load_model, pad_id, read_train_config
from train.dist import resolve_device
from eval.report import write_report
from prep.artifact import atomic_output_dir, sha256_file, write_json_atomic
from prep.features import open_features
from prep.folders import EvalFolder, FeaturesFolder, RunFolder
from tasks.spec import EvalContext

SCHEMA_VERSION = 1


def _read_json_if_any(path: Path):
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON (line {err.lineno} column {err.colno}: {err.msg})") from None


def describe_artifacts(model_dir: Path, features_dir: Path, data_path: Path, data_sha256: str,
                       features_manifest: dict) -> dict:
    """Paths and content hashes of everything an evaluation read."""
    run = RunFolder(model_dir)
    weights = sorted(run.model.glob("*.safetensors"))
    return {
        "model_dir": str(model_dir.resolve()),
        "features_dir": str(features_dir.resolve()),
        "data": {"path": str(data_path.resolve()), "sha256": data_sha256},
        "tokenizer_fingerprint": (features_manifest.get("tokenizer") or {}).get("fingerprint"),
        "features_manifest_sha256": sha256_file(FeaturesFolder(features_dir).manifest),
        "features_config": features_manifest.get("config"),
        "encoder_weights_sha256": {p.name: sha256_file(p) for p in weights},
        "head_sha256": sha256_file(run.head),
        "train_config_sha256": sha256_file(run.train_config),
    }


def _summary(task: str, model_dir: Path, artifacts: dict, config: dict) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "inputs": artifacts,
        "train_config": read_train_config(model_dir),
        "train_metrics": _read_json_if_any(RunFolder(model_dir).metrics),
        "seconds": None,
    }


def _finish(tmp: Path, summary: dict, spec, model_dir: Path, started: float, plot_data: dict | None = None) -> dict:
    """Write metrics.json, the report and the manifest (last) into the temp folder."""
    summary["seconds"] = round(time.perf_counter() - started, 3)
    out = EvalFolder(tmp)
    write_json_atomic(out.metrics, summary)
    write_report(tmp, summary, spec.eval, model_dir, plot_data)
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    write_json_atomic(out.manifest, {
        "schema_version": SCHEMA_VERSION,
        "stage": "eval",
        "task": summary["task"],
        "files": [{"path": str(p.relative_to(tmp)), "sha256": sha256_file(p), "bytes": p.stat().st_size}
                  for p in files],
    })
    return summary


def run_evaluation(spec, run_dir: str | Path, features_dir: str | Path, data_path: str | Path,
                   out_dir: str | Path, cfg=None, device: str = "auto") -> dict:
    """Evaluate a fine-tuned run of the task ``spec`` (its :class:`tasks.spec.TaskSpec`, resolved by the
    entry point); write ``out_dir`` and return its metrics.json payload.

    ``cfg`` is the task's eval config (default: its defaults). Outputs: the task's prediction
    files (see ``tasks/<name>/evaluate.py``), ``metrics.json``, ``report.md`` with its PNG plots,
    ``manifest.json`` (last).
    """
    cfg = cfg if cfg is not None else spec.eval.config()
    started = time.perf_counter()
    model_dir, features_dir, data_path = Path(run_dir), Path(features_dir), Path(data_path)
    if spec.eval.data_digest is not None:  # a task whose --data may be a folder names its own digest
        data_sha256 = spec.eval.data_digest(data_path)
    elif not data_path.is_file():
        raise FileNotFoundError(f"data file not found: {data_path}")
    else:
        data_sha256 = sha256_file(data_path)
    manifest = check_inputs(model_dir, features_dir, spec, data_sha256)
    artifacts = describe_artifacts(model_dir, features_dir, data_path, data_sha256, manifest)
    device = resolve_device(device)
    model, _ = load_model(model_dir, spec.train, device)
    context = EvalContext(model=model, features=open_features(features_dir), manifest=manifest,
                          data_path=data_path, config=cfg, device=device, pad_id=pad_id(model_dir))
    outcome = spec.eval.evaluate(context)
    summary = _summary(spec.name, model_dir, artifacts, {**cfg.to_dict(), **outcome.config, "device": device})
    summary.update(outcome.summary)
    with atomic_output_dir(out_dir, reuse_if_made_while_waiting=True) as tmp:
        if tmp is None:  # a concurrent evaluation of the same inputs wrote out_dir while we waited
            return load_run(out_dir)
        outcome.write_files(tmp)
        _finish(tmp, summary, spec, model_dir, started, outcome.plot_data)
    return summary


def runs_task(run_dirs) -> str:
    """The one task the evaluation folders ``run_dirs`` are of (an error naming them all otherwise)."""
    tasks = {load_run(d)["task"] for d in run_dirs}
    if len(tasks) != 1:
        raise ValueError(f"one task at a time, got {sorted(tasks) or 'no evaluation folder'}")
    return tasks.pop()


def load_run(run_dir: str | Path) -> dict:
    """The metrics.json of a finished evaluation folder (for compare)."""
    folder = EvalFolder(run_dir)
    path = folder.metrics
    if not folder.manifest.is_file() or not path.is_file():
        raise FileNotFoundError(f"{folder.path}: not a finished evaluation (no {folder.MANIFEST} / {folder.METRICS})")
    payload = _read_json_if_any(path)
    if not isinstance(payload, dict) or not isinstance(payload.get("task"), str) or "metrics" not in payload:
        raise ValueError(f"{path}: not an evaluation metrics file")
    return payload
