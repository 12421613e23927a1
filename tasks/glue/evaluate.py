"""GLUE evaluation: every dev row scored, the task's official metric(s), or an error naming the rows that were not.

The model runs on the features through textclass's evaluation (one window per example, so a
text's prediction is its window's); the gold side is the GLUE file read again with the task's
reader. **Coverage** is scored rows over the file's data rows, and anything below 100% is a
:class:`GlueCoverageError` listing the skipped lines and why, before the model runs: no example
is left out of a denominator, as Hugging Face's ``-100`` labels left 5% of CoLA out for the
write-up's authors.

``metrics.json`` holds textclass's metrics plus ``glue``: the task, the dev split, the official
scores in percent under their table keys (``mcc``, ``f1``, ``accuracy_matched``, ...) and the
coverage.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from tasks.glue.benchmark import TASKS
from tasks.glue.metrics import official_scores, positive_f1
from tasks.glue.read import read_glue
from tasks.spec import EvalContext, EvalOutcome
from tasks.textclass.evaluate import PREDICTIONS_FILE, GoldText, evaluate_textclass, write_predictions_csv

SKIPPED_SHOWN = 20


class GlueCoverageError(ValueError):
    """Some dev rows would not be scored; the message lists them (file, line, reason)."""


def read_gold(path: Path, glue_task: str) -> tuple[list[GoldText], dict]:
    """Every data row of a GLUE file as a gold text, and the coverage record; raises if any row is broken."""
    examples, skipped, info = read_glue(path, glue_task)
    check_coverage(path, info["rows"], skipped)
    gold = [GoldText(example.example_id, example.label, example.line) for example in examples]
    return gold, {"rows": info["rows"], "scored": len(gold), "coverage": len(gold) / info["rows"]}


def check_coverage(path: Path, rows: int, skipped: list[dict]) -> None:
    if not skipped:
        return
    listed = "; ".join(f"{record['where']}: {record['reason']}" for record in skipped[:SKIPPED_SHOWN])
    more = f" (and {len(skipped) - SKIPPED_SHOWN} more)" if len(skipped) > SKIPPED_SHOWN else ""
    raise GlueCoverageError(
        f"{path}: coverage {100 * (rows - len(skipped)) / rows:.2f}% ({rows - len(skipped)} of {rows} rows): "
        f"every dev example must be scored, and {len(skipped)} cannot be: {listed}{more}. Fix the file.")


def glue_split(manifest: dict, data_path: Path) -> str:
    """The dev split the features were made from (``dev``, ``dev_matched``): the file's stem, checked."""
    task = TASKS[(manifest.get("input") or {})["glue_task"]]
    split = data_path.stem
    if split not in task.dev_splits:
        raise ValueError(f"{data_path}: GLUE {task.name} is scored on {', '.join(task.dev_splits)}.tsv, not {split}")
    return split


def evaluate(context: EvalContext) -> EvalOutcome:
    """The evaluation engine's entry: score the run on one GLUE dev file."""
    info = context.manifest.get("input") or {}
    task = TASKS[info["glue_task"]]
    gold, coverage = read_gold(context.data_path, task.name)
    check_coverage(context.data_path, coverage["rows"], context.manifest.get("skipped", []))
    results = evaluate_textclass(context.model, context.features, gold, list(task.labels), info["label_type"],
                                 context.config, device=context.device, pad_id=context.pad_id)
    if results.unscored:  # features and file disagree; evaluate_textclass names unexplained rows itself
        raise GlueCoverageError(f"{context.data_path}: {len(results.unscored)} rows have no prediction")
    split = glue_split(context.manifest, context.data_path)
    metrics = dict(results.metrics)
    if task.positive_label in task.labels:  # binary tasks: F1 of the positive class (official for MRPC, QQP)
        metrics["f1"] = positive_f1(results.per_label, task.positive_label)
    scores = official_scores(task, split, metrics)
    metrics["glue_score"] = statistics.fmean(scores.values())
    summary = {"metrics": metrics, "counts": results.counts, "timing": results.timing, "unscored": [],
               "glue": {"task": task.name, "split": split, "coverage": coverage, "scores": scores},
               "data_info": {**{key: info.get(key) for key in ("text_column", "text_pair_column", "label_column")},
                             "label_type": info["label_type"], "labels": results.labels}}
    if not task.regression:
        summary.update(per_label=results.per_label, confusion_matrix=results.confusion_matrix)

    def write_files(folder: Path) -> None:
        write_predictions_csv(folder / PREDICTIONS_FILE, results.rows, results.labels)

    plot_data = None
    if task.regression:
        plot_data = {"regression": [(truth, value) for _, truth, value, _, _ in results.rows if value is not None]}
    return EvalOutcome(summary=summary, write_files=write_files, plot_data=plot_data)
