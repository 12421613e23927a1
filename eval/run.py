"""The evaluation stage end to end: check inputs, run, write every output atomically.

``run_squad_eval`` and ``run_gap_eval`` are what the CLI (``python -m eval``) and the Luigi
task ``pipeline.evaluate.Evaluation`` call. An output folder is written beside its destination
and renamed into place after its ``manifest.json`` (the list of files with their sha256), so a
failed or killed evaluation never leaves a folder that looks finished.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from eval.config import GapEvalConfig, SquadEvalConfig
from eval.gap import evaluate_gap
from eval.gap_formats import read_gap_gold, write_submission_csv, write_system_tsv
from eval.inference import check_inputs, load_model, read_train_config, resolve_device
from eval.report import write_report
from eval.squad import breakdown_by_question_type, evaluate_squad, load_squad_data
from prep.artifact import MANIFEST, atomic_output_dir, sha256_file, write_json_atomic
from prep.features import open_features

SCHEMA_VERSION = 1
METRICS_FILE = "metrics.json"


def _write_json(path: Path, payload) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


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
    weights = sorted((model_dir / "model").glob("*.safetensors"))
    return {
        "model_dir": str(model_dir.resolve()),
        "features_dir": str(features_dir.resolve()),
        "data": {"path": str(data_path.resolve()), "sha256": data_sha256},
        "tokenizer_fingerprint": (features_manifest.get("tokenizer") or {}).get("fingerprint"),
        "features_manifest_sha256": sha256_file(features_dir / MANIFEST),
        "features_config": features_manifest.get("config"),
        "encoder_weights_sha256": {p.name: sha256_file(p) for p in weights},
        "head_sha256": sha256_file(model_dir / "head.safetensors"),
        "train_config_sha256": sha256_file(model_dir / "train_config.json"),
    }


def _skipped_ids(features_manifest: dict) -> tuple[str, ...]:
    return tuple(s["example_id"] for s in features_manifest.get("skipped", []) if s.get("example_id"))


def _pad_id(model_dir: Path) -> int:
    from prep.tokenizer import load_fast_tokenizer

    pad = load_fast_tokenizer(model_dir / "model").pad_token_id
    return int(pad) if pad is not None else 0


def _summary(task: str, model_dir: Path, artifacts: dict, config: dict) -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "task": task,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": config,
        "inputs": artifacts,
        "train_config": read_train_config(model_dir),
        "train_metrics": _read_json_if_any(model_dir / "metrics.json"),
        "seconds": None,
    }


def _finish(tmp: Path, summary: dict, model_dir: Path, started: float, plot_data: dict | None = None) -> dict:
    """Write metrics.json, the report and the manifest (last) into the temp folder."""
    summary["seconds"] = round(time.perf_counter() - started, 3)
    _write_json(tmp / METRICS_FILE, summary)
    write_report(tmp, summary, model_dir, plot_data)
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    write_json_atomic(tmp / MANIFEST, {
        "schema_version": SCHEMA_VERSION,
        "stage": "eval",
        "task": summary["task"],
        "files": [{"path": str(p.relative_to(tmp)), "sha256": sha256_file(p), "bytes": p.stat().st_size}
                  for p in files],
    })
    return summary


def run_squad_eval(model_dir: str | Path, features_dir: str | Path, data_path: str | Path, out_dir: str | Path,
                   cfg: SquadEvalConfig = SquadEvalConfig(), device: str = "auto") -> dict:
    """Evaluate a fine-tuned SQuAD model; write ``out_dir`` and return its metrics.json payload.

    Outputs: ``predictions.json`` ({id: answer}, the official scripts' input), ``nbest.json``,
    ``null_odds.json`` (v2: the official v2.0 script's ``--na-prob-file``), ``metrics.json``,
    ``report.md`` with its PNG plots, ``manifest.json``.
    """
    started = time.perf_counter()
    model_dir, features_dir, data_path = Path(model_dir), Path(features_dir), Path(data_path)
    data_sha256 = sha256_file(data_path)
    manifest = check_inputs(model_dir, features_dir, "squad", data_sha256)
    # Features built from the first N articles (prep --max-articles) are scored on those articles.
    articles_used = manifest["input"].get("articles_used")
    subset = articles_used if articles_used != manifest["input"].get("articles_in_file") else None
    data = load_squad_data(data_path, max_articles=subset)
    artifacts = describe_artifacts(model_dir, features_dir, data_path, data_sha256, manifest)
    device = resolve_device(device)
    model, _ = load_model(model_dir, device)
    features = open_features(features_dir)
    results = evaluate_squad(model, features, data, cfg, device=device, pad_id=_pad_id(model_dir),
                             skipped_ids=_skipped_ids(manifest))
    config = {**cfg.to_dict(), "version_2_with_negative": results.version_2_with_negative, "device": device,
              "articles_scored": len(data.dataset), "articles_in_file": manifest["input"].get("articles_in_file")}
    summary = _summary("squad", model_dir, artifacts, config)
    summary.update({
        "metrics": results.metrics,
        "breakdown_by_question_type": breakdown_by_question_type(data, results.exact, results.f1),
        "counts": results.counts,
        "timing": results.timing,
    })
    if results.threshold_search is not None:
        summary["threshold_search_over_spans"] = results.threshold_search
    plot_data = {"null_odds": _null_odds_split(data, results.null_odds)} if results.version_2_with_negative else None
    with atomic_output_dir(out_dir) as tmp:
        _write_json(tmp / "predictions.json", results.predictions)
        _write_json(tmp / "nbest.json", results.nbest)
        if results.version_2_with_negative:
            _write_json(tmp / "null_odds.json", results.null_odds)
        _finish(tmp, summary, model_dir, started, plot_data)
    return summary


def _null_odds_split(data, null_odds: dict) -> dict:
    """null-odds of answerable and unanswerable questions (the report's histogram)."""
    from eval.squad_metrics import make_qid_to_has_ans

    has_ans = make_qid_to_has_ans(data.dataset)
    return {
        "has_answer": [null_odds[q] for q, v in has_ans.items() if v and q in null_odds],
        "no_answer": [null_odds[q] for q, v in has_ans.items() if not v and q in null_odds],
    }


def run_gap_eval(model_dir: str | Path, features_dir: str | Path, data_path: str | Path, out_dir: str | Path,
                 cfg: GapEvalConfig = GapEvalConfig(), device: str = "auto") -> dict:
    """Evaluate a fine-tuned GAP model; write ``out_dir`` and return its metrics.json payload.

    Outputs: ``submission.csv`` (Kaggle: ID,A,B,NEITHER), ``gap_predictions.tsv`` (the GAP
    scorer's headerless ID / A-coref / B-coref), ``metrics.json``, ``report.md`` with plots,
    ``manifest.json``.
    """
    started = time.perf_counter()
    model_dir, features_dir, data_path = Path(model_dir), Path(features_dir), Path(data_path)
    gold = read_gap_gold(data_path)
    data_sha256 = sha256_file(data_path)
    manifest = check_inputs(model_dir, features_dir, "gap", data_sha256)
    artifacts = describe_artifacts(model_dir, features_dir, data_path, data_sha256, manifest)
    device = resolve_device(device)
    model, _ = load_model(model_dir, device)
    features = open_features(features_dir)
    results = evaluate_gap(model, features, gold, cfg, device=device, pad_id=_pad_id(model_dir),
                           skipped_ids=_skipped_ids(manifest))
    summary = _summary("gap", model_dir, artifacts, {**cfg.to_dict(), "device": device})
    summary.update({
        "metrics": results.metrics,
        "scorecard": results.scorecard,
        "confusion_matrix": results.confusion_matrix,
        "counts": results.counts,
        "timing": results.timing,
    })
    with atomic_output_dir(out_dir) as tmp:
        write_submission_csv(tmp / "submission.csv", results.example_ids, results.probabilities)
        write_system_tsv(tmp / "gap_predictions.tsv", results.example_ids, results.decisions)
        _finish(tmp, summary, model_dir, started)
    return summary


def load_run(run_dir: str | Path) -> dict:
    """The metrics.json of a finished evaluation folder (for compare)."""
    run_dir = Path(run_dir)
    path = run_dir / METRICS_FILE
    if not (run_dir / MANIFEST).is_file() or not path.is_file():
        raise FileNotFoundError(f"{run_dir}: not a finished evaluation (no {MANIFEST} / {METRICS_FILE})")
    payload = _read_json_if_any(path)
    if not isinstance(payload, dict) or payload.get("task") not in ("squad", "gap"):
        raise ValueError(f"{path}: not an evaluation metrics file")
    return payload
