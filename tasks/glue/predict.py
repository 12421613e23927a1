"""GLUE predictions on a test file: the GLUE server's submission file for the run's task.

    python -m eval predict glue --model runs/finetune-glue-linear-<hash> --data glue_data/RTE/test.tsv --out runs/predict-rte

The test layouts (``index`` column, or QQP's ``id``, then the sentences; no label; CoLA's has a
header there) are read by :func:`tasks.glue.read.read_glue_test`, encoded as the run's features
were (the task's tokenizer call, its ``max_seq_length``) and scored by textclass's evaluation
functions, so a dev file with its labels removed gets exactly evaluation's predictions. Output:
``<TASK>.tsv`` as the GLUE server takes it (``CoLA.tsv``, ``SST-2.tsv``, ``MNLI-m.tsv`` /
``MNLI-mm.tsv`` by the file's name, ``AX.tsv`` for MNLI's model on ``diagnostic.tsv``, ...):
header ``index<TAB>prediction``, the label as the task names it (CoLA, SST-2, MRPC, QQP, WNLI 0/1;
RTE, QNLI entailment / not_entailment; MNLI entailment / neutral / contradiction; STS-B the
score). A row prep skipped has no line there (the server wants every row: fix it) and is reported.

The Python API takes ``{"text", "text_pair"?, "id"?}`` dicts and returns ``{"id", "label",
"probabilities"}`` (STS-B: ``{"id", "value"}``).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from eval.inference import ordered_table
from tasks.glue.benchmark import TASKS
from tasks.glue.prep import GluePrepConfig
from tasks.glue.read import read_glue_test
from tasks.spec import PredictContext, PredictOutcome
from tasks.textclass.evaluate import _cell, pool_windows, softmax, window_logits


def prep_config(train_config: dict, features_config: dict, options=None) -> GluePrepConfig:
    """The run's GLUE task and ``max_seq_length``."""
    task = (train_config.get("data_info") or {}).get("glue_task") or features_config.get("glue_task")
    if not task:
        raise ValueError("the run's train_config.json names no GLUE task (data_info.glue_task)")
    length = features_config.get("max_seq_length") or train_config.get("max_seq_length")
    return GluePrepConfig(glue_task=task, **({"max_seq_length": length} if length else {}))


def _line(where: str) -> int:
    found = re.search(r"line (\d+)", where or "")
    return int(found.group(1)) if found else 0


def predict(context: PredictContext) -> PredictOutcome:
    """A label (STS-B: a score) per row of the test file."""
    task = TASKS[(context.manifest.get("input") or {})["glue_task"]]
    examples, skipped_rows, _ = read_glue_test(context.data_path, task)
    rows = sorted([(e.line, e.example_id, None) for e in examples]
                  + [(_line(s["where"]), s["example_id"] or f"line-{_line(s['where'])}", s["reason"])
                     for s in skipped_rows])
    texts: dict = {}
    if context.features.num_rows:
        table = ordered_table(context.features)
        outputs = window_logits(context.model, table, context.config.batch_size,
                                1 if task.regression else len(task.labels), device=context.device,
                                pad_id=context.pad_id, progress=context.progress)
        texts = pool_windows(table.column("example_id").to_pylist(), outputs, context.config.fold_pool)
    records = []
    for _, example_id, reason in rows:
        found = texts.get(example_id)
        if task.regression:
            record = {"id": example_id, "value": None if found is None else float(found[0][0])}
        else:
            probs = None if found is None else softmax(found[0])
            record = {"id": example_id, "label": None if probs is None else task.labels[int(probs.argmax())],
                      "probabilities": None if probs is None else dict(zip(task.labels, map(float, probs)))}
        if found is None:
            record["skipped"] = reason or context.skipped.get(example_id, "no features")
        records.append(record)
    name = f"{task.submission_name(Path(context.data_path).stem)}.tsv"

    def write_files(folder: Path) -> None:
        with open(folder / name, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
            writer.writerow(["index", "prediction"])
            for record in records:
                if "skipped" not in record:
                    writer.writerow([record["id"], _cell(record["value"] if task.regression else record["label"])])

    counts = {"rows": len(rows), "rows_predicted": len(texts), "rows_skipped": len(rows) - len(texts),
              "glue_task": task.name, "submission_file": name}
    return PredictOutcome(records=records, write_files=write_files, counts=counts)


def _cell_text(value) -> str:
    # GLUE's TSVs have no quoting: a tab or line break inside a sentence becomes a space.
    return re.sub(r"[\t\r\n]", " ", str(value))


def write_inputs(inputs: list, folder: Path, train_config: dict) -> tuple[Path, None]:
    """Sentences (strings, or ``{"text", "text_pair"?, "id"?}``) as the run's task's test.tsv (ids: positions)."""
    task = TASKS[prep_config(train_config, {}).glue_task]
    index, text, pair = task.test_columns
    lines = ["\t".join(column for column in (index, text, pair) if column is not None)]
    for i, item in enumerate(inputs):
        item = {"text": item} if isinstance(item, str) else item
        if not isinstance(item, dict) or not isinstance(item.get("text"), str) \
                or (pair is not None and not isinstance(item.get("text_pair"), str)):
            wanted = '{"text": str, "text_pair": str}' if pair is not None else 'a text or {"text": str}'
            raise ValueError(f"input {i}: GLUE {task.name} takes {wanted}, got {item!r}")
        values = [str(item.get("id", i)), item["text"]] + ([item["text_pair"]] if pair is not None else [])
        lines.append("\t".join(_cell_text(value) for value in values))
    path = Path(folder) / "test.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, None
