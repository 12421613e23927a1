"""GLUE's lines in report.md, ``eval compare`` and ``eval aggregate``: the official score first, in percent."""

from __future__ import annotations

from tasks.textclass import report as textclass_report

AGGREGATE_METRICS = ("glue_score", "accuracy", "f1", "mcc", "pearson", "spearman")
METRIC_LABELS = {**textclass_report.METRIC_LABELS, "glue_score": "GLUE score (%)", "f1": "F1 (positive class)"}
METRIC_DIGITS = {"glue_score": 2, "accuracy": 4, "f1": 4, "mcc": 4, "pearson": 4, "spearman": 4}


def metric_rows(summary: dict) -> list[tuple]:
    glue = summary.get("glue") or {}
    coverage = glue.get("coverage") or {}
    rows = [("GLUE score (%)", summary["metrics"].get("glue_score"), ".2f", None)]
    rows += [(f"{key} (%)", value, ".2f", None) for key, value in (glue.get("scores") or {}).items()]
    rows.append(("Coverage (scored / dev rows)", coverage.get("coverage"), ".4f", None))
    return rows + textclass_report.metric_rows(summary)


def headline(metrics: dict) -> dict:
    """The GLUE score, then the figures of textclass's headline that the task has."""
    found = {"GLUE score": metrics.get("glue_score")}
    if metrics.get("f1") is not None:
        found["F1"] = 100 * metrics["f1"]
    return {**found, **textclass_report.headline(metrics)}
