"""Text classification evaluation: window logits in, one prediction per text of the data file out.

A long text was folded into several windows by prep; its prediction combines the windows' logits
(``fold_pool``: their mean, or their per-class max), so every score is per text, the unit the
user labelled. Window-level accuracy is reported beside it. Every text of the data file is
scored: a text prep skipped (empty text, missing label, a label outside the training label set)
has no prediction and counts as wrong; a text without features that prep did not skip is an error
(the features were built from another file).

``evaluate_textclass(model, features, gold, labels, label_type, cfg)`` is the model-in,
results-out core; :func:`evaluate` is what the evaluation engine (:mod:`eval.run`) calls.
Output: ``test_predictions.csv`` (id, truth, prediction, ``p_<label>`` per label, windows;
regression: id, truth, prediction, windows), one row per text of the data file in file order.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import pyarrow as pa
import torch

from eval.inference import classifier_logits, length_batches, ordered_table, row_lengths, tracked
from tasks.spec import EvalContext, EvalOutcome
from tasks.textclass.metrics import (
    NO_PREDICTION,
    OUTSIDE_LABELS,
    mean_squared_error,
    score_classification,
    score_regression,
)
from tasks.textclass.model import collate_textclass
from tasks.textclass.read import SKIP_DUPLICATE_ID, integer_name, read_examples

FOLD_POOLS = ("mean", "max")
PREDICTIONS_FILE = "test_predictions.csv"
# The manifest "input" keys that say how to read the data file again.
READ_KEYS = ("format", "text_column", "label_column", "text_pair_column", "id_column")


@dataclass(frozen=True)
class TextClassEvalConfig:
    """How a text's windows combine into its prediction, and the inference batch size."""

    batch_size: int = field(default=64, metadata={"help": "inference batch in windows (speed only)"})
    fold_pool: str = field(default="mean", metadata={
        "help": "how a folded text's window logits combine into its prediction: their mean, or their per-class max",
        "choices": FOLD_POOLS})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.fold_pool not in FOLD_POOLS:
            raise ValueError(f"fold_pool must be one of {FOLD_POOLS}, got {self.fold_pool!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class GoldText(NamedTuple):
    """One text (row) of the data file as the scorer sees it."""

    example_id: str
    truth: str | float | None  # the label's name (classification) or value; None: the row has no usable label
    line: int | None
    skip_reason: str | None = None  # why the reader (so prep) keeps no example for this row


# ---------------------------------------------------------------------------------------------
# gold
# ---------------------------------------------------------------------------------------------


def _line_of(where: str | None) -> int | None:
    found = re.search(r"line (\d+)", where or "")
    return int(found.group(1)) if found else None


def _skipped_row_id(record: dict, line: int | None) -> str:
    """The id a skipped row is listed under; rows with no id, or a repeated one, get one naming their line."""
    if not record.get("example_id"):
        return f"line-{line}"
    if record.get("reason") == SKIP_DUPLICATE_ID:
        return f"{record['example_id']}@line-{line}"
    return record["example_id"]


def label_key(value, label_type: str) -> str:
    """A label as the label set spells it: integer labels by value ("03" is "3"), others as written."""
    return integer_name(str(value).strip()) if label_type == "int" else str(value)


def read_gold(data_path: str | Path, data_info: Mapping) -> list[GoldText]:
    """Every row of the data file in file order, read as prep read it.

    ``data_info`` is the features manifest's ``input`` record (format, column names and the
    resolved ``label_type``: "int", "str" or "float"). Class labels are read as written and named
    as the label set names them, so a label outside the set is a text with that truth, not a
    format error (prep reads them the same way). Rows the reader skips (empty text, missing label,
    no id, a repeated id) are texts too, with their reason and no truth.
    """
    label_type = data_info.get("label_type")
    if label_type not in ("int", "str", "float"):
        raise ValueError(f"the data's label_type must be resolved to int, str or float, got {label_type!r}")
    columns = {key: data_info.get(key) for key in READ_KEYS if data_info.get(key) is not None}
    examples, skipped, _ = read_examples(data_path, **columns, label_type="float" if label_type == "float" else "str")
    gold = [GoldText(e.example_id, float(e.label) if label_type == "float" else label_key(e.label, label_type), e.line)
            for e in examples]
    for record in skipped:
        line = _line_of(record.get("where"))
        gold.append(GoldText(_skipped_row_id(record, line), None, line, record.get("reason")))
    gold.sort(key=lambda g: (g.line is None, g.line or 0))
    ids = [g.example_id for g in gold]
    if len(set(ids)) != len(ids):
        repeated = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"{data_path}: text ids repeat (e.g. {repeated[:3]}); a text needs a unique id to be scored")
    return gold


def gold_class_ids(gold: Sequence[GoldText], labels: Sequence[str], label_type: str) -> np.ndarray:
    """Class id per text; :data:`OUTSIDE_LABELS` for a label not in ``labels`` or no label at all."""
    index = {label_key(label, label_type): k for k, label in enumerate(labels)}
    return np.array([OUTSIDE_LABELS if g.truth is None else index.get(label_key(g.truth, label_type), OUTSIDE_LABELS)
                     for g in gold], dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# windows -> texts
# ---------------------------------------------------------------------------------------------


@torch.inference_mode()
def window_logits(model, table: pa.Table, batch_size: int, width: int, device: str = "cpu",
                  pad_id: int = 0, progress=None) -> np.ndarray:
    """The model's outputs ``[N, width]`` (float64) for the windows of ``table``, in row order."""
    lengths = row_lengths(table)
    out = np.zeros((len(lengths), width), dtype=np.float64)
    for rows in tracked(length_batches(lengths, batch_size), progress):
        batch = collate_textclass(table.take(pa.array(rows)), pad_id=pad_id)
        types = batch.get("token_type_ids")
        logits = classifier_logits(model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                         token_type_ids=None if types is None else types.to(device)),
                                   "a text classifier")
        if tuple(logits.shape) != (len(rows), width):
            raise ValueError(f"model returned {tuple(logits.shape)} for a batch of {len(rows)}; expected [B, {width}]"
                             " (the label set of the features and of the trained model differ?)")
        out[rows] = logits.double().cpu().numpy()
    return out


def pool_windows(example_ids: Sequence[str], outputs: np.ndarray,
                 fold_pool: str = "mean") -> dict[str, tuple[np.ndarray, int]]:
    """``{example_id: (pooled output, windows)}``: the mean or per-class max over each text's windows."""
    if fold_pool not in FOLD_POOLS:
        raise ValueError(f"fold_pool must be one of {FOLD_POOLS}, got {fold_pool!r}")
    outputs = np.asarray(outputs, dtype=np.float64)
    order = list(dict.fromkeys(example_ids))
    position = {example_id: i for i, example_id in enumerate(order)}
    text_of = np.array([position[example_id] for example_id in example_ids], dtype=np.int64)
    windows = np.bincount(text_of, minlength=len(order))
    if fold_pool == "mean":
        pooled = np.zeros((len(order), outputs.shape[1]))
        np.add.at(pooled, text_of, outputs)
        pooled /= windows[:, None]
    else:
        pooled = np.full((len(order), outputs.shape[1]), -np.inf)
        np.maximum.at(pooled, text_of, outputs)
    return {example_id: (pooled[i], int(windows[i])) for i, example_id in enumerate(order)}


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.asarray(logits, dtype=np.float64) - np.max(logits, axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# texts -> scores
# ---------------------------------------------------------------------------------------------


def unscored_texts(gold: Sequence[GoldText], scored_ids, skipped: Sequence[dict]) -> list[dict]:
    """The texts without a prediction, each with the reason prep skipped it.

    The reason is the reader's (empty text, missing label, ...) or, for a row the reader kept,
    the one in prep's manifest (a label outside the training label set). A text with no
    features that prep did not skip is an error: the features were built from another file.
    """
    reasons = {s["example_id"]: s.get("reason", "") for s in skipped if s.get("example_id")}
    unscored = [g for g in gold if g.example_id not in scored_ids]
    unexplained = [g.example_id for g in unscored if g.skip_reason is None and g.example_id not in reasons]
    if unexplained:
        raise ValueError(f"{len(unexplained)} texts of the data file have no features and were not skipped by prep "
                         f"(e.g. {unexplained[:3]}); the features were built from another file")
    return [{"example_id": g.example_id, "reason": g.skip_reason or reasons[g.example_id], "truth": g.truth,
             "line": g.line} for g in unscored]


def score_label_predictions(gold: Sequence[GoldText], predicted: Mapping[str, str | None], labels: Sequence[str],
                            label_type: str) -> dict:
    """Per-text scores of predicted label names (None: no prediction) for every text of ``gold``.

    Adds to :func:`score_classification`'s metrics ``unseen_label_texts`` (texts whose label is
    not in ``labels``) and returns their ids and labels under ``unseen_label``.
    """
    labels = [str(label) for label in labels]
    gold_ids = gold_class_ids(gold, labels, label_type)
    index = {label_key(label, label_type): k for k, label in enumerate(labels)}
    predicted_ids = []
    for g in gold:
        name = predicted.get(g.example_id)
        if name is not None and label_key(name, label_type) not in index:
            raise ValueError(f"{g.example_id}: predicted label {name!r} is not in the label set {labels}")
        predicted_ids.append(NO_PREDICTION if name is None else index[label_key(name, label_type)])
    scored = score_classification(gold_ids, np.array(predicted_ids, dtype=np.int64), labels)
    unseen = [g for g, k in zip(gold, gold_ids) if k == OUTSIDE_LABELS and g.truth is not None]
    scored["metrics"]["unseen_label_texts"] = len(unseen)
    names: dict[str, int] = {}
    for g in unseen:
        names[str(g.truth)] = names.get(str(g.truth), 0) + 1
    scored["unseen_label"] = {"texts": len(unseen), "ids": [g.example_id for g in unseen], "labels": names}
    return scored


def score_value_predictions(gold: Sequence[GoldText], predicted: Mapping[str, float | None]) -> dict:
    """Regression scores over the texts that have both a value and a prediction; the rest are counted."""
    pairs = [(float(g.truth), float(predicted[g.example_id])) for g in gold
             if g.truth is not None and predicted.get(g.example_id) is not None]
    if not pairs:
        raise ValueError("no text of the data file has both a value and a prediction")
    truth, values = zip(*pairs)
    scored = score_regression(truth, values)
    scored["metrics"]["texts_without_prediction"] = len(gold) - len(pairs)
    return scored


# ---------------------------------------------------------------------------------------------
# the whole evaluation
# ---------------------------------------------------------------------------------------------


@dataclass
class TextClassResults:
    metrics: dict
    per_label: list  # classification: precision / recall / F1 / support per label
    confusion_matrix: dict | None  # {"labels", "matrix": gold rows x predicted columns}
    unseen_label: dict | None
    unscored: list  # texts without a prediction: {"example_id", "reason", "truth"}
    rows: list  # one per gold text: (id, truth, prediction, probabilities or None, windows)
    labels: list
    counts: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)


def _check_features(table: pa.Table, gold: Sequence[GoldText]) -> None:
    """Every window belongs to a text of the data file, and every text has all of its windows."""
    ids = table.column("example_id").to_pylist()
    unknown = sorted(set(ids) - {g.example_id for g in gold})
    if unknown:
        raise ValueError(f"{len(unknown)} feature example ids are not texts of the data file (e.g. {unknown[:3]})")
    found = Counter(ids)
    declared = dict(zip(ids, table.column("num_windows").to_pylist()))
    wrong = [example_id for example_id, windows in found.items() if windows != declared[example_id]]
    if wrong:
        raise ValueError(f"{len(wrong)} texts have fewer or more windows than their num_windows (e.g. {wrong[:3]}); "
                         "not a complete prep output")


def _check_feature_labels(table: pa.Table, gold: Sequence[GoldText], labels, label_type: str) -> None:
    """The class id each window carries is its text's gold label read again: same file, same label order."""
    by_id = dict(zip([g.example_id for g in gold], gold_class_ids(gold, labels, label_type)))
    ids = table.column("example_id").to_pylist()
    window_labels = table.column("label").to_numpy()
    wrong = [i for i, label in zip(ids, window_labels) if by_id[i] != label]
    if wrong:
        raise ValueError(f"{len(wrong)} windows carry another class id than their text's label in the data file "
                         f"(e.g. {wrong[:3]}); the features were built from another file or label order")


def evaluate_textclass(model, features: pa.Table, gold: Sequence[GoldText], labels: Sequence, label_type: str,
                       cfg: TextClassEvalConfig, *, device: str = "cpu", pad_id: int = 0,
                       skipped: Sequence[dict] = ()) -> TextClassResults:
    """Run ``model`` on the windows of ``features`` and score one prediction per text of ``gold``.

    ``labels`` is the label set in class-id order (empty for regression, ``label_type`` "float");
    ``skipped`` is the prep manifest's skipped list (texts with no features, each with a reason).
    """
    regression = label_type == "float"
    labels = [] if regression else [str(label) for label in labels]
    if not regression and not labels:
        raise ValueError("the features' manifest has no label set; a classifier cannot be scored without one")
    model_labels = getattr(model, "labels", None)
    if not regression and model_labels is not None and [str(m) for m in model_labels] != labels:
        raise ValueError(f"the model was trained on labels {list(model_labels)} (in that order), the features carry "
                         f"{labels}; prepare the data again with --labels '{json.dumps(list(model_labels))}'")
    table = ordered_table(features)
    feature_ids = table.column("example_id").to_pylist()
    # Mismatched inputs fail here, before the model runs.
    _check_features(table, gold)
    unscored = unscored_texts(gold, set(feature_ids), skipped)
    if not regression:
        _check_feature_labels(table, gold, labels, label_type)
    started = time.perf_counter()
    outputs = window_logits(model, table, cfg.batch_size, 1 if regression else len(labels), device=device,
                            pad_id=pad_id)
    inference_s = time.perf_counter() - started
    texts = pool_windows(feature_ids, outputs, cfg.fold_pool)
    window_truth = table.column("label").to_numpy()
    if regression:
        predicted = {example_id: float(pooled[0]) for example_id, (pooled, _) in texts.items()}
        scored = score_value_predictions(gold, predicted)
        scored["metrics"]["window_mse"] = mean_squared_error(window_truth, outputs[:, 0])
        rows = [(g.example_id, g.truth, predicted.get(g.example_id), None, texts.get(g.example_id, (None, 0))[1])
                for g in gold]
    else:
        probabilities = {example_id: softmax(pooled) for example_id, (pooled, _) in texts.items()}
        predicted = {example_id: labels[int(np.argmax(p))] for example_id, p in probabilities.items()}
        scored = score_label_predictions(gold, predicted, labels, label_type)
        scored["metrics"]["window_accuracy"] = float((outputs.argmax(axis=1) == window_truth).mean())
        rows = [(g.example_id, g.truth, predicted.get(g.example_id), probabilities.get(g.example_id),
                 texts.get(g.example_id, (None, 0))[1]) for g in gold]
    scored["metrics"]["windows"] = table.num_rows
    folded = sum(1 for _, windows in texts.values() if windows > 1)
    return TextClassResults(
        metrics=scored["metrics"], per_label=scored.get("per_label", []),
        confusion_matrix=scored.get("confusion_matrix"), unseen_label=scored.get("unseen_label"),
        unscored=unscored, rows=rows, labels=labels,
        counts={"texts": len(gold), "texts_scored": len(texts), "texts_without_prediction": len(unscored),
                "texts_folded": folded, "windows": table.num_rows,
                "unseen_label_texts": (scored.get("unseen_label") or {}).get("texts", 0)},
        timing={"inference_seconds": inference_s,
                "features_per_second": table.num_rows / inference_s if inference_s > 0 else None},
    )


# ---------------------------------------------------------------------------------------------
# files
# ---------------------------------------------------------------------------------------------


def _cell(value) -> str:
    if value is None:
        return ""
    return repr(float(value)) if isinstance(value, (float, np.floating)) else str(value)


def write_predictions_csv(path: str | Path, rows: Sequence[tuple], labels: Sequence[str]) -> None:
    """``test_predictions.csv``: one row per text; empty prediction and probabilities for a text with none.

    Columns: id, truth, prediction, ``p_<label>`` per label (classification), windows. Floats are
    written in full (repr), so re-scoring or averaging the file gives the evaluation's numbers.
    """
    labels = [str(label) for label in labels]
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "truth", "prediction", *(f"p_{label}" for label in labels), "windows"])
        for example_id, truth, prediction, probabilities, windows in rows:
            probs = [""] * len(labels) if probabilities is None else [_cell(float(p)) for p in probabilities]
            writer.writerow([example_id, _cell(truth), _cell(prediction), *probs, windows])


def evaluate(context: EvalContext) -> EvalOutcome:
    """The evaluation engine's entry: score the run against the data file, list the file to write."""
    info = context.manifest.get("input") or {}
    gold = read_gold(context.data_path, info)
    label_type = info["label_type"]
    results = evaluate_textclass(context.model, context.features, gold, info.get("labels") or [], label_type,
                                 context.config, device=context.device, pad_id=context.pad_id,
                                 skipped=context.manifest.get("skipped", []))
    summary = {"metrics": results.metrics, "counts": results.counts, "timing": results.timing,
               "unscored": results.unscored,
               # how to read the data file again (score-textclass, ensembles)
               "data_info": {**{key: info.get(key) for key in READ_KEYS}, "label_type": label_type,
                             "labels": results.labels}}
    if label_type != "float":
        summary.update(per_label=results.per_label, confusion_matrix=results.confusion_matrix,
                       unseen_label=results.unseen_label)

    def write_files(folder: Path) -> None:
        write_predictions_csv(folder / PREDICTIONS_FILE, results.rows, results.labels)

    plot_data = None
    if label_type == "float":
        plot_data = {"regression": [(truth, value) for _, truth, value, _, _ in results.rows
                                    if truth is not None and value is not None]}
    return EvalOutcome(summary=summary, write_files=write_files, plot_data=plot_data)
