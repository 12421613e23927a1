"""GLUE's official metrics and its averages, from textclass's per-text scores.

Per task (``benchmark.GlueTask.metrics``): CoLA Matthews correlation; SST-2, QNLI, RTE, WNLI
accuracy; MRPC F1 / accuracy and QQP accuracy / F1 (F1 of the positive class, "1": scikit-learn's
``f1_score`` default); STS-B Pearson / Spearman; MNLI accuracy on dev_matched / dev_mismatched.
Scores are in percent, as GLUE reports them. A task with two metrics counts as their mean, and
the averages are plain means over tasks: "average of all" over every task in the table, and
"average without WNLI" as the BERT paper reports it.
"""

from __future__ import annotations

import statistics
from typing import Mapping

from tasks.glue.benchmark import NOT_IN_BERT_AVERAGE, TASKS, GlueTask


def positive_f1(per_label: list[dict], positive: str) -> float:
    """F1 of the positive class from textclass's per-label records."""
    for record in per_label:
        if record["label"] == positive:
            return record["f1"]
    raise ValueError(f"no label {positive!r} among {[record['label'] for record in per_label]}")


def official_scores(task: GlueTask, split: str, metrics: Mapping) -> dict[str, float]:
    """The official metrics one dev split gives, in percent, under their table keys (``accuracy_matched``, ...)."""
    found = {}
    for (metric, metric_split), key in zip(task.metrics, task.metric_keys()):
        if metric_split == split:
            value = metrics.get(metric)
            if value is None:
                raise ValueError(f"GLUE {task.name}: the evaluation of {split} has no {metric!r}")
            found[key] = 100.0 * value
    return found


def task_score(task: GlueTask | str, scores: Mapping[str, float]) -> float | None:
    """The task's GLUE score: its official metric, or the mean of its two; None if one is missing."""
    task = TASKS[task] if isinstance(task, str) else task
    values = [scores.get(key) for key in task.metric_keys()]
    return None if None in values else statistics.fmean(values)


def glue_averages(task_scores: Mapping[str, float | None]) -> dict[str, float | None]:
    """``average_all`` over every task given, ``average_without_wnli`` over those but WNLI (None if one is missing)."""
    def mean(names):
        values = [task_scores[name] for name in names]
        return None if not values or None in values else statistics.fmean(values)

    return {"average_without_wnli": mean([name for name in task_scores if name not in NOT_IN_BERT_AVERAGE]),
            "average_all": mean(list(task_scores))}
