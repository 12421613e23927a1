"""Re-score a SQuAD ``predictions.json`` without a model (the official scripts' job, with strict id checks).

    python -m eval score-squad --data dev-v2.0.json --predictions predictions.json --na-probs null_odds.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tasks.squad.read import load_squad_data
from tasks.squad.metrics import PredictionIdError, evaluate_squad_predictions


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



def add_score_args(parser: argparse.ArgumentParser) -> None:
    """``score-squad``'s own flags (besides --data and --predictions)."""
    parser.add_argument("--na-probs", default=None, help="v2: null_odds.json (the official --na-prob-file)")
    parser.add_argument("--na-prob-thresh", type=float, default=1.0)
    parser.add_argument("--version-2-with-negative", action=argparse.BooleanOptionalAction, default=None)


def score_file(args: argparse.Namespace) -> dict:
    return score_squad_file(args.data, args.predictions, args.na_probs, args.version_2_with_negative,
                            args.na_prob_thresh)
