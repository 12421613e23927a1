"""Text classification's part of report.md, compare tables and run summaries: metric rows, sections, plots."""

from __future__ import annotations

from pathlib import Path

from eval.plots import figure, plot_confusion

CONFUSION_PNG = "confusion_matrix.png"
REGRESSION_PNG = "predicted_vs_truth.png"
# How many texts without a prediction the report lists by id (all of them are in metrics.json).
UNSCORED_SHOWN = 20

AGGREGATE_METRICS = ("accuracy", "macro_f1", "weighted_f1", "mcc", "window_accuracy", "pearson", "spearman", "mse")
METRIC_LABELS = {"accuracy": "accuracy", "macro_f1": "macro F1", "weighted_f1": "weighted F1", "mcc": "MCC",
                 "window_accuracy": "window accuracy", "pearson": "Pearson", "spearman": "Spearman", "mse": "MSE"}


def _is_regression(metrics: dict) -> bool:
    return "accuracy" not in metrics


def _percent(value):
    return None if value is None else 100.0 * value


def metric_rows(summary: dict) -> list[tuple]:
    """(name, value, format, None) for the report's metrics table: a user's own data has no published anchor."""
    metrics = summary["metrics"]
    if _is_regression(metrics):
        return [("Pearson", metrics["pearson"], ".4f", None), ("Spearman", metrics["spearman"], ".4f", None),
                ("MSE", metrics["mse"], ".4f", None), ("Window MSE", metrics.get("window_mse"), ".4f", None),
                ("Texts without prediction", metrics.get("texts_without_prediction"), "d", None)]
    return [
        ("Accuracy (%)", _percent(metrics["accuracy"]), ".2f", None),
        ("Macro F1 (%)", _percent(metrics["macro_f1"]), ".2f", None),
        ("Weighted F1 (%)", _percent(metrics["weighted_f1"]), ".2f", None),
        ("MCC", metrics["mcc"], ".4f", None),
        ("Window accuracy (%)", _percent(metrics.get("window_accuracy")), ".2f", None),
        ("Unseen-label texts", metrics.get("unseen_label_texts"), "d", None),
        ("Texts without prediction", metrics.get("texts_without_prediction"), "d", None),
    ]


def headline(metrics: dict) -> dict:
    """The figures a comparison or run summary shows, by label."""
    if _is_regression(metrics):
        return {"Pearson": metrics["pearson"], "Spearman": metrics["spearman"], "MSE": metrics["mse"]}
    return {"accuracy": _percent(metrics["accuracy"]), "macro F1": _percent(metrics["macro_f1"]),
            "MCC": metrics["mcc"], "weighted F1": _percent(metrics["weighted_f1"]),
            "window accuracy": _percent(metrics.get("window_accuracy"))}


def _counts_lines(summary: dict) -> list[str]:
    counts = summary.get("counts") or {}
    pool = (summary.get("config") or {}).get("fold_pool", "mean")
    return [f"{counts.get('texts', '?')} texts of the data file, {counts.get('windows', '?')} windows "
            f"({counts.get('texts_folded', '?')} texts folded into more than one window); a text's prediction is the "
            f"{pool} of its windows' logits. Every text is scored: a text prep skipped has no prediction and counts "
            "as wrong.", ""]


def _unscored_lines(summary: dict) -> list[str]:
    unscored = summary.get("unscored") or []
    if not unscored:
        return []
    first = f" The first {UNSCORED_SHOWN}:" if len(unscored) > UNSCORED_SHOWN else ""
    lines = ["## Texts without a prediction", "",
             f"{len(unscored)} texts had no features (prep skipped them); each counts as a wrong prediction.{first}",
             "", "| id | truth | reason |", "|---|---|---|"]
    for text in unscored[:UNSCORED_SHOWN]:
        truth = "" if text.get("truth") is None else str(text["truth"])
        lines.append(f"| {_escape(text['example_id'])} | {_escape(truth)} | {_escape(text.get('reason', ''))} |")
    unseen = summary.get("unseen_label") or {}
    if unseen.get("texts"):
        names = ", ".join(f"{_escape(name)} ({count})" for name, count in sorted(unseen["labels"].items()))
        lines += ["", f"Labels never seen in training: {names}."]
    return lines + [""]


def _escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def report_sections(summary: dict, out_dir: Path, plot_data: dict | None, written: list) -> list[str]:
    """report.md's text classification sections: per-label scores, the confusion matrix, unscored texts."""
    lines = _counts_lines(summary)
    if _is_regression(summary["metrics"]):
        pairs = (plot_data or {}).get("regression") or []
        if pairs:
            plot_regression(pairs, out_dir / REGRESSION_PNG)
            written.append(out_dir / REGRESSION_PNG)
            lines += ["## Predicted vs truth", "", f"![predicted vs truth]({REGRESSION_PNG})", ""]
        return lines + _unscored_lines(summary)
    lines += ["## Per label", "", "| Label | Precision (%) | Recall (%) | F1 (%) | Support |",
              "|---|---:|---:|---:|---:|"]
    for row in summary["per_label"]:
        lines.append(f"| {_escape(row['label'])} | {100 * row['precision']:.2f} | {100 * row['recall']:.2f} | "
                     f"{100 * row['f1']:.2f} | {row['support']} |")
    confusion = summary["confusion_matrix"]
    labels = [_escape(label) for label in confusion["labels"]]
    lines += ["", "## Confusion matrix", "", f"![confusion matrix]({CONFUSION_PNG})", "",
              "Texts with a prediction and a label in the label set (gold rows, predicted columns).", "",
              "| gold \\ predicted | " + " | ".join(labels) + " | total |", "|---|" + "---:|" * (len(labels) + 1)]
    for label, row in zip(labels, confusion["matrix"]):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    lines.append("")
    plot_confusion(confusion, out_dir / CONFUSION_PNG, "Text classification confusion matrix")
    written.append(out_dir / CONFUSION_PNG)
    return lines + _unscored_lines(summary)


def plot_regression(pairs: list[tuple[float, float]], path: Path) -> None:
    truth, predicted = zip(*pairs)
    fig = figure(4.6, 4)
    axes = fig.add_subplot(1, 1, 1)
    axes.scatter(truth, predicted, s=8, alpha=0.6)
    low, high = min(min(truth), min(predicted)), max(max(truth), max(predicted))
    axes.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
    axes.set_xlabel("truth")
    axes.set_ylabel("predicted")
    axes.set_title("Predicted vs truth (per text)")
    fig.tight_layout()
    fig.savefig(path)
