"""Re-score GAP predictions without a model, and score several runs together (ensembles).

    python -m eval score-gap --data gap-test.tsv --predictions runs/eval-gap/submission.csv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tasks.gap.formats import read_gap_gold, read_submission_csv, read_system_tsv
from tasks.gap.metrics import gap_scorecard, gap_scorer_tallies, score_gap
from tasks.gap.report import AGGREGATE_METRICS


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


def add_score_args(parser: argparse.ArgumentParser) -> None:
    """``score-gap`` has no flags besides --data and --predictions."""


def score_file(args: argparse.Namespace) -> dict:
    return score_gap_file(args.data, args.predictions)


def ensemble(run_dirs: list[Path], summaries: list[dict]) -> dict:
    """Scores of the runs' probabilities (their submission.csv) averaged per example."""
    data = {(s.get("inputs") or {}).get("data", {}).get("sha256") for s in summaries}
    if len(data) != 1:
        raise ValueError("an ensemble needs runs scored on the same data file")
    gold = read_gap_gold((summaries[0]["inputs"])["data"]["path"])
    gold_ids = [row.example_id for row in gold]
    probs = np.mean([read_submission_csv(Path(d) / "submission.csv", gold_ids) for d in run_dirs], axis=0)
    metrics = score_gap(gold, probs)["metrics"]
    return {key: metrics[key] for key in AGGREGATE_METRICS}
