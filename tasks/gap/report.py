"""GAP's part of report.md, compare tables and run summaries: metric rows, sections, plots."""

from __future__ import annotations

from pathlib import Path

from eval.plots import figure, plot_confusion

CONFUSION_PNG = "confusion_matrix.png"
GENDER_PNG = "gap_f1_by_gender.png"
# Published reference points (gap-test).
ANCHORS = {
    "F1 overall": (66.9, "GAP paper baseline (Webster et al., 2018)"),
    "Bias (F/M)": (0.93, "GAP paper baseline (Webster et al., 2018)"),
}


def metric_rows(summary: dict) -> list[tuple]:
    """(name, value, format, (anchor, source) or None) for the report's metrics table."""
    metrics = summary["metrics"]
    return [
        ("Log loss", metrics["log_loss"], ".4f", None),
        ("Accuracy (%)", 100.0 * metrics["accuracy"], ".2f", None),
        ("F1 overall", metrics["f1_overall"], ".2f", ANCHORS["F1 overall"]),
        ("F1 masculine", metrics["f1_masculine"], ".2f", None),
        ("F1 feminine", metrics["f1_feminine"], ".2f", None),
        ("Bias (F/M)", metrics["bias_f_over_m"], ".3f", ANCHORS["Bias (F/M)"]),
    ]


def headline(metrics: dict) -> dict:
    """The figures a comparison or run summary shows, by label."""
    return {"F1": metrics["f1_overall"], "bias F/M": metrics["bias_f_over_m"], "log loss": metrics["log_loss"],
            "accuracy": 100.0 * metrics["accuracy"], "F1 M": metrics["f1_masculine"],
            "F1 F": metrics["f1_feminine"]}


AGGREGATE_METRICS = ("f1_overall", "f1_masculine", "f1_feminine", "bias_f_over_m", "log_loss", "accuracy")
METRIC_LABELS = {"f1_overall": "F1", "f1_masculine": "F1 M", "f1_feminine": "F1 F", "bias_f_over_m": "bias F/M",
                 "log_loss": "log loss", "accuracy": "accuracy"}


def report_sections(summary: dict, out_dir: Path, plot_data: dict | None, written: list) -> list[str]:
    """report.md's GAP sections: the scorer's card by gender and the confusion matrix."""
    card = summary["scorecard"]
    confusion = summary["confusion_matrix"]
    lines = ["Log loss as Kaggle scores `submission.csv` (clipped to [1e-15, 1-1e-15], rows renormalised); "
             "F1 and bias as GAP's `gap_scorer.py` scores `gap_predictions.tsv`.", ""]
    lines += ["## GAP scorer by gender", "", f"![by gender]({GENDER_PNG})", "",
              "| Gender | Precision | Recall | F1 | TP | FP | FN | TN |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name in ("overall", "masculine", "feminine"):
        c = card[name]
        lines.append(f"| {name} | {c['precision']:.1f} | {c['recall']:.1f} | {c['f1']:.1f} | {c['tp']} | {c['fp']} | {c['fn']} | {c['tn']} |")
    bias = card.get("bias_f_over_m")
    lines += ["", f"Bias (F/M): {'-' if bias is None else format(bias, '.2f')}", ""]
    plot_gap_gender(card, out_dir / GENDER_PNG, f1_anchor=ANCHORS["F1 overall"][0])
    written.append(out_dir / GENDER_PNG)
    labels = confusion["labels"]
    lines += ["## Confusion matrix", "", f"![confusion matrix]({CONFUSION_PNG})", "",
              "| gold \\ predicted | " + " | ".join(labels) + " | total |", "|---|" + "---:|" * (len(labels) + 1)]
    for label, row in zip(labels, confusion["matrix"]):
        lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + f" | {sum(row)} |")
    lines.append("")
    plot_confusion(confusion, out_dir / CONFUSION_PNG, "GAP confusion matrix")
    written.append(out_dir / CONFUSION_PNG)
    return lines

def plot_gap_gender(scorecard: dict, path: Path, f1_anchor: float | None = None) -> None:
    names = ["overall", "masculine", "feminine"]
    fig = figure(5, 3.4)
    axes = fig.add_subplot(1, 1, 1)
    width = 0.27
    for k, measure in enumerate(("precision", "recall", "f1")):
        axes.bar([i + (k - 1) * width for i in range(3)], [scorecard[n][measure] for n in names], width, label=measure)
    if f1_anchor is not None:
        axes.axhline(f1_anchor, color="grey", linestyle="--", linewidth=1, label="GAP baseline F1")
    axes.set_xticks(range(3), names)
    axes.set_ylim(0, 100)
    axes.legend(fontsize=8)
    axes.set_title("GAP scorer by gender")
    fig.tight_layout()
    fig.savefig(path)
