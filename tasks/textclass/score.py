"""Re-score text classification predictions without a model, and score several runs together (ensembles).

    python -m eval score-textclass --data test.csv --predictions runs/eval-textclass/test_predictions.csv \\
        --text-column Text --label-column Category --id-column ArticleId

The data file is read as prep read it (the column flags are prep's); the label set is the
predictions file's ``p_<label>`` columns (none: a regression).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from tasks.textclass.evaluate import (
    PREDICTIONS_FILE,
    GoldText,
    read_gold,
    score_label_predictions,
    score_value_predictions,
)
from tasks.textclass.read import resolve_label_type
from tasks.textclass.report import AGGREGATE_METRICS


def read_predictions_csv(path: str | Path, gold_ids: list[str]) -> tuple[list[str] | None, dict[str, dict]]:
    """``(labels or None for regression, {id: {"prediction", "probabilities", "windows"}})``.

    Every text of the data file must have a row (empty prediction: none); a row of an id that is
    not a text of the data file, or a repeated id, is an error.
    """
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [name for name in ("id", "prediction") if name not in columns]
        if missing:
            raise ValueError(f"{path}: no {missing} column (columns: {columns}); not a {PREDICTIONS_FILE}")
        probability_columns = [name for name in columns if name.startswith("p_")]
        labels = [name[2:] for name in probability_columns] or None
        rows: dict[str, dict] = {}
        for line, row in enumerate(reader, start=2):
            example_id = row["id"]
            if example_id in rows:
                raise ValueError(f"{path} line {line}: id {example_id!r} appears twice")
            prediction = row["prediction"] if row["prediction"] != "" else None
            probabilities = None
            if labels and prediction is not None:
                try:
                    probabilities = np.array([float(row[name]) for name in probability_columns])
                except ValueError:
                    raise ValueError(f"{path} line {line}: a p_<label> value is not a number") from None
            if not labels and prediction is not None:
                try:
                    prediction = float(prediction)
                except ValueError:
                    raise ValueError(f"{path} line {line}: prediction {prediction!r} is not a number") from None
            rows[example_id] = {"prediction": prediction, "probabilities": probabilities,
                                "windows": int(row.get("windows") or 0)}
    unknown = sorted(set(rows) - set(gold_ids))
    absent = [example_id for example_id in gold_ids if example_id not in rows]
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} ids are not texts of the data file (e.g. {unknown[:3]})")
    if absent:
        raise ValueError(f"{path}: {len(absent)} texts of the data file have no row (e.g. {absent[:3]})")
    return labels, rows


def score_predictions(gold: list[GoldText], labels: list[str] | None, predicted: dict, label_type: str) -> dict:
    """Scores of predicted label names (classification) or values (``labels`` None) for every text of ``gold``."""
    if labels is None:
        return score_value_predictions(gold, predicted)
    return score_label_predictions(gold, predicted, labels, label_type)


def score_textclass_file(data_path: str | Path, predictions_path: str | Path, data_info: dict) -> dict:
    """Re-score a ``test_predictions.csv`` (its prediction column) against the data file.

    ``data_info`` names the data file's format and columns (prep's settings) and its
    ``label_type`` ("auto": integers when every ``p_<label>`` name is one); a predictions file
    without ``p_<label>`` columns is a regression's, so its labels are read as numbers.
    """
    with open(predictions_path, encoding="utf-8", newline="") as handle:
        header = next(csv.reader(handle), [])
    labels = [name[2:] for name in header if name.startswith("p_")]
    label_type = "float" if not labels else resolve_label_type(data_info.get("label_type") or "auto", labels)
    gold = read_gold(data_path, {**data_info, "label_type": label_type})
    labels, rows = read_predictions_csv(predictions_path, [g.example_id for g in gold])
    return score_predictions(gold, labels, {i: row["prediction"] for i, row in rows.items()}, label_type)


def add_score_args(parser: argparse.ArgumentParser) -> None:
    """The data file's columns and format, spelled as prep's flags (``--text-column`` ...)."""
    parser.add_argument("--text-column", default="text", help="column holding the text (default: %(default)s)")
    parser.add_argument("--label-column", default="label", help="column holding the label (default: %(default)s)")
    parser.add_argument("--text-pair-column", default=None, help="column of the second text of a pair (unset: none)")
    parser.add_argument("--id-column", default=None, help="column of the text's id (unset: row-<line>)")
    parser.add_argument("--format", default=None, choices=("csv", "tsv", "jsonl"),
                        help="data file format (unset: from the extension)")
    parser.add_argument("--label-type", default="auto", choices=("auto", "int", "str"),
                        help="class labels as integers (\"03\" is 3) or as written; auto: integers when every "
                             "p_<label> name is one (a file without p_ columns is a regression's: numbers)")


def score_file(args: argparse.Namespace) -> dict:
    data_info = {"text_column": args.text_column, "label_column": args.label_column,
                 "text_pair_column": args.text_pair_column, "id_column": args.id_column, "format": args.format,
                 "label_type": args.label_type}
    scored = score_textclass_file(args.data, args.predictions, data_info)
    return {key: value for key, value in scored.items() if key in ("metrics", "per_label", "confusion_matrix",
                                                                  "unseen_label")}


def ensemble(run_dirs: list[Path], summaries: list[dict]) -> dict:
    """Scores of the runs' test_predictions.csv averaged per text (probabilities; regression: values)."""
    data = {(s.get("inputs") or {}).get("data", {}).get("sha256") for s in summaries}
    if len(data) != 1:
        raise ValueError("an ensemble needs runs scored on the same data file")
    data_info = summaries[0].get("data_info") or {}
    label_type = data_info.get("label_type")
    gold = read_gold(summaries[0]["inputs"]["data"]["path"], data_info)
    gold_ids = [g.example_id for g in gold]
    runs = [read_predictions_csv(Path(d) / PREDICTIONS_FILE, gold_ids) for d in run_dirs]
    labels = runs[0][0]
    if any(run_labels != labels for run_labels, _ in runs):
        raise ValueError("an ensemble needs runs with the same label set (p_<label> columns)")
    predicted = {}
    for example_id in gold_ids:
        present = [rows[example_id] for _, rows in runs if rows[example_id]["prediction"] is not None]
        if present and len(present) != len(runs):
            raise ValueError(f"{example_id}: predicted by some runs and not others; the runs read different features")
        if not present:
            predicted[example_id] = None
        elif labels is None:
            predicted[example_id] = float(np.mean([row["prediction"] for row in present]))
        else:
            predicted[example_id] = labels[int(np.argmax(np.mean([row["probabilities"] for row in present], axis=0)))]
    metrics = score_predictions(gold, labels, predicted, label_type)["metrics"]
    return {key: metrics[key] for key in AGGREGATE_METRICS if key in metrics}

