"""RACE's part of report.md, compare tables and run summaries: metric rows, the per-level table, a plot."""

from __future__ import annotations

from pathlib import Path

from eval.plots import figure

LEVELS_PNG = "race_accuracy_by_level.png"
# Published test accuracies for scale (RACE leaderboard); ours are on dev or a subset.
ANCHORS = {"Accuracy (%)": (65.0, "BERT-base, RACE test (leaderboard); BERT-large about 72")}

AGGREGATE_METRICS = ("accuracy", "accuracy_middle", "accuracy_high", "log_loss")
METRIC_LABELS = {"accuracy": "accuracy", "accuracy_middle": "middle", "accuracy_high": "high", "log_loss": "log loss"}


def metric_rows(summary: dict) -> list[tuple]:
    metrics = summary["metrics"]
    return [
        ("Accuracy (%)", metrics["accuracy"], ".2f", ANCHORS["Accuracy (%)"]),
        ("Accuracy middle (%)", metrics.get("accuracy_middle"), ".2f", None),
        ("Accuracy high (%)", metrics.get("accuracy_high"), ".2f", None),
        ("Log loss", metrics["log_loss"], ".4f", None),
    ]


def headline(metrics: dict) -> dict:
    return {"accuracy": metrics["accuracy"], "middle": metrics.get("accuracy_middle"),
            "high": metrics.get("accuracy_high"), "log loss": metrics["log_loss"]}


def report_sections(summary: dict, out_dir: Path, plot_data: dict | None, written: list) -> list[str]:
    metrics, counts = summary["metrics"], summary.get("counts") or {}
    levels = sorted(key.removeprefix("questions_") for key in counts if key.startswith("questions_"))
    lines = ["## Accuracy by level", "", f"![by level]({LEVELS_PNG})", "",
             "| level | questions | accuracy (%) |", "|---|---:|---:|"]
    for level in levels:
        lines.append(f"| {level} | {counts[f'questions_{level}']} | {metrics[f'accuracy_{level}']:.2f} |")
    lines += [f"| all | {counts.get('questions')} | {metrics['accuracy']:.2f} |", "",
              f"{counts.get('unanswered', 0)} questions had no features (skipped by prep) and count as wrong. "
              "`answers.json`: question id -> predicted letter and the four option probabilities.", ""]
    fig = figure(4, 3)
    axes = fig.add_subplot(1, 1, 1)
    names = [*levels, "all"]
    axes.bar(names, [metrics[f"accuracy_{level}"] for level in levels] + [metrics["accuracy"]])
    axes.axhline(25.0, color="grey", linestyle=":", linewidth=1, label="chance (4 options)")
    axes.set_ylim(0, 100)
    axes.set_ylabel("accuracy (%)")
    axes.legend(fontsize=8)
    axes.set_title("RACE accuracy by level")
    fig.tight_layout()
    fig.savefig(out_dir / LEVELS_PNG)
    written.append(out_dir / LEVELS_PNG)
    return lines
