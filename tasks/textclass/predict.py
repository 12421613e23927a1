"""Text classification predictions on new texts: the training file's layout without its label column.

    python -m eval predict textclass --model runs/finetune-textclass-linear-<hash> --data new.csv \\
        --text-column Text --id-column ArticleId --out runs/predict-news

The file is read like training's (``--text-column`` / ``--text-pair-column`` / ``--id-column`` /
``--format``, the same flags and defaults; any format :func:`tasks.textclass.read.read_examples`
reads), folded into windows with the run's settings (``max_seq_length``, ``fold``,
``fold_stride``), and a text's windows are pooled (``--fold-pool``) by the evaluation's own
functions, so a labelled file with its labels removed gets exactly evaluation's predictions.
Output: ``predictions.csv``, one row per row of the file in file order: id, label and one
``p_<label>`` probability per label of the run (regression: id, value); a row prep skipped (an
empty text, a repeated id) has empty cells and is reported.

The Python API takes texts (strings, or ``{"text", "text_pair"?, "id"?}`` dicts) and returns
``{"id", "label", "probabilities": {label: p}}`` (regression: ``{"id", "value"}``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from eval.inference import ordered_table
from tasks.spec import PredictContext, PredictOutcome
from tasks.textclass.evaluate import _cell, _line_of, _skipped_row_id, pool_windows, softmax, window_logits
from tasks.textclass.prep import TextClassPrepConfig
from tasks.textclass.read import FORMATS, read_examples

PREDICTIONS_FILE = "predictions.csv"
# The prep settings of the run's windows; the columns are the new file's own.
WINDOW_FIELDS = ("max_seq_length", "fold", "fold_stride")


@dataclass(frozen=True)
class TextClassPredictOptions:
    """How the new file is read: the training flags, less the label column (defaults as in training)."""

    text_column: str = field(default="text", metadata={"help": "column (JSON key) holding the text"})
    text_pair_column: str | None = field(default=None, metadata={
        "help": "column with the second text (a run trained on text pairs needs it)"})
    id_column: str | None = field(default=None, metadata={
        "help": "column with each row's unique id (default: row-<line>)"})
    format: str | None = field(default=None, metadata={
        "help": "input format (default: from the file extension)", "choices": FORMATS})

    def __post_init__(self):
        if not self.text_column:
            raise ValueError("text_column must be non-empty")


def prep_config(train_config: dict, features_config: dict, options: TextClassPredictOptions | None
                ) -> TextClassPrepConfig:
    """The run's windows and label set, reading the new file's columns."""
    options = options or TextClassPredictOptions()
    info = train_config.get("data_info") or {}
    label_type = info.get("label_type")
    if label_type not in ("int", "str", "float"):
        raise ValueError(f"the run's train_config.json records no label set (data_info.label_type {label_type!r})")
    if bool(info.get("text_pair_column")) != bool(options.text_pair_column):
        trained = "text pairs" if info.get("text_pair_column") else "single texts"
        raise ValueError(f"the run was trained on {trained}: "
                         + ("give --text-pair-column" if info.get("text_pair_column") else "drop --text-pair-column"))
    recorded = dict(features_config) or {"max_seq_length": train_config.get("max_seq_length")}
    return TextClassPrepConfig(
        **{name: recorded[name] for name in WINDOW_FIELDS if recorded.get(name) is not None},
        text_column=options.text_column, text_pair_column=options.text_pair_column, id_column=options.id_column,
        format=options.format, label_column=info.get("label_column") or "label", label_type=label_type,
        labels=None if label_type == "float" else json.dumps(list(info.get("labels") or [])))


def read_rows(data_path: Path, info: dict) -> list[tuple[str, str | None]]:
    """``(id, skip reason or None)`` for every row of the file in file order, read as prep read it
    (``info``: the features manifest's input record)."""
    examples, skipped, _ = read_examples(data_path, info.get("format"), info["text_column"], None,
                                         info.get("text_pair_column"), info.get("id_column"), "str")
    rows = [(e.line, e.example_id, None) for e in examples]
    for record in skipped:
        line = _line_of(record.get("where"))
        rows.append((line or 0, _skipped_row_id(record, line), record.get("reason")))
    return [(example_id, reason) for _, example_id, reason in sorted(rows, key=lambda row: row[0])]


def predict(context: PredictContext) -> PredictOutcome:
    """One prediction per text: its windows' outputs pooled as evaluation pools them."""
    info = context.manifest.get("input") or {}
    regression = info.get("label_type") == "float"
    labels = [] if regression else [str(label) for label in info.get("labels") or []]
    rows = read_rows(context.data_path, info)
    skipped = context.skipped
    texts: dict = {}
    if context.features.num_rows:
        table = ordered_table(context.features)
        outputs = window_logits(context.model, table, context.config.batch_size, 1 if regression else len(labels),
                                device=context.device, pad_id=context.pad_id, progress=context.progress)
        texts = pool_windows(table.column("example_id").to_pylist(), outputs, context.config.fold_pool)
    records = []
    for example_id, reason in rows:
        found = texts.get(example_id)
        if regression:
            record = {"id": example_id, "value": None if found is None else float(found[0][0])}
        else:
            probs = None if found is None else softmax(found[0])
            record = {"id": example_id, "label": None if probs is None else labels[int(np.argmax(probs))],
                      "probabilities": None if probs is None else dict(zip(labels, map(float, probs)))}
        if found is None:
            record["skipped"] = reason or skipped.get(example_id, "no features")
        records.append(record)

    def write_files(folder: Path) -> None:
        write_predictions_csv(folder / PREDICTIONS_FILE, records, labels)

    counts = {"texts": len(rows), "texts_predicted": len(texts), "texts_skipped": len(rows) - len(texts),
              "texts_folded": sum(1 for _, windows in texts.values() if windows > 1),
              "windows": context.features.num_rows}
    return PredictOutcome(records=records, write_files=write_files, counts=counts)


def write_predictions_csv(path: Path, records: list[dict], labels: list[str]) -> None:
    """``predictions.csv``: id, label, ``p_<label>`` per label (regression: id, value); floats in full."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        if not labels:
            writer.writerow(["id", "value"])
            writer.writerows([record["id"], _cell(record["value"])] for record in records)
            return
        writer.writerow(["id", "label", *(f"p_{label}" for label in labels)])
        for record in records:
            probs = record["probabilities"] or {}
            writer.writerow([record["id"], _cell(record["label"]), *(_cell(probs.get(label)) for label in labels)])


def write_inputs(inputs: list, folder: Path, train_config: dict) -> tuple[Path, TextClassPredictOptions]:
    """Texts (strings or ``{"text", "text_pair"?, "id"?}``) as JSON lines, and the options that read them."""
    pairs = bool((train_config.get("data_info") or {}).get("text_pair_column"))
    path = Path(folder) / "texts.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i, item in enumerate(inputs):
            item = {"text": item} if isinstance(item, str) else item
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise ValueError(f"input {i}: expected a text or {{\"text\": str, ...}}, got {item!r}")
            record = {"id": str(item.get("id", f"input-{i}")), "text": item["text"]}
            if pairs:
                record["text_pair"] = item.get("text_pair")
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")
    return path, TextClassPredictOptions(text_column="text", text_pair_column="text_pair" if pairs else None,
                                         id_column="id", format="jsonl")
