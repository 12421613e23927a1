"""Re-score prediction files without a model (the official scripts' job, with strict id checks).

    python -m eval score-squad --data dev-v2.0.json --predictions predictions.json --na-probs null_odds.json
    python -m eval score-gap --data gap-test.tsv --predictions submission.csv
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eval.gap_formats import read_gap_gold, read_submission_csv, read_system_tsv
from eval.gap_metrics import gap_scorecard, gap_scorer_tallies, score_gap
from eval.squad import load_squad_data
from eval.squad_metrics import PredictionIdError, evaluate_squad_predictions


def read_json_object(path: str | Path, what: str) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        payload = json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: line {err.lineno} column {err.colno}: malformed JSON ({err.msg}); truncated file?") from None
    if not isinstance(payload, dict):
        raise PredictionIdError(f"{path}: {what} must be a JSON object {{question id: ...}}, got {type(payload).__name__}")
    return payload


def score_squad_file(data_path: str | Path, predictions_path: str | Path, na_probs_path: str | Path | None = None,
                     version_2_with_negative: bool | None = None, na_prob_thresh: float = 1.0) -> dict:
    """The official script's metrics for ``predictions.json`` (v2: with ``null_odds.json`` as na-probs).

    ``na_prob_thresh`` is the official v2.0 script's ``--na-prob-thresh`` (default 1.0 there too).
    """
    data = load_squad_data(data_path)
    predictions = read_json_object(predictions_path, "predictions")
    version_2 = data.has_impossible if version_2_with_negative is None else version_2_with_negative
    na_probs = None
    if na_probs_path is not None:
        na_probs = read_json_object(na_probs_path, "na-probs")
        bad = [k for k, v in na_probs.items() if not isinstance(v, (int, float)) or isinstance(v, bool)]
        if bad:
            raise ValueError(f"{na_probs_path}: {len(bad)} values are not numbers (e.g. {bad[:3]})")
    return evaluate_squad_predictions(data.dataset, predictions, version_2_with_negative=version_2,
                                      na_probs=na_probs, null_score_diff_threshold=na_prob_thresh)


def score_gap_file(data_path: str | Path, predictions_path: str | Path) -> dict:
    """Scores of a Kaggle ``submission.csv`` (all metrics) or a GAP system TSV (scorer F1 and bias only)."""
    gold = read_gap_gold(data_path)
    gold_ids = [row.example_id for row in gold]
    predictions_path = Path(predictions_path)
    if predictions_path.suffix.lower() == ".csv":
        probs = read_submission_csv(predictions_path, gold_ids)
        return score_gap(gold, np.asarray(probs))["metrics"]
    card = gap_scorecard(gap_scorer_tallies(gold, read_system_tsv(predictions_path, gold_ids)))
    return {"f1_overall": card["overall"]["f1"], "f1_masculine": card["masculine"]["f1"],
            "f1_feminine": card["feminine"]["f1"], "bias_f_over_m": card["bias_f_over_m"], "scorecard": card}
