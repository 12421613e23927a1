"""The report's PNG plots, drawn with matplotlib's object API on an Agg canvas (no pyplot state)."""

from __future__ import annotations

import math
from pathlib import Path

def curve_group(tag: str) -> int:
    """Panel order: losses, learning rate, eval metrics, the rest."""
    lowered = tag.lower()
    if lowered.endswith("loss"):
        return 0
    if lowered.endswith("lr") or "learning_rate" in lowered:
        return 1
    if "eval" in lowered or "f1" in lowered or "exact" in lowered or "acc" in lowered:
        return 2
    return 3


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def plot_training_curves(series: dict, path: Path, max_panels: int = 12) -> list[str]:
    """One panel per scalar tag (losses, then learning rate, then eval metrics); returns the tags drawn."""
    tags = sorted(series, key=lambda tag: (curve_group(tag), "eval" in tag.lower(), tag))[:max_panels]
    if not tags:
        return []
    columns = min(3, len(tags))
    rows = math.ceil(len(tags) / columns)
    figure = _figure(5 * columns, 3.2 * rows)
    for i, tag in enumerate(tags):
        axes = figure.add_subplot(rows, columns, i + 1)
        steps = [step for step, _ in series[tag]]
        values = [value for _, value in series[tag]]
        axes.plot(steps, values, marker="o" if len(steps) <= 20 else None, linewidth=1.2)
        axes.set_title(tag, fontsize=10)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    return tags


def plot_confusion(confusion: dict, path: Path) -> None:
    labels, matrix = confusion["labels"], confusion["matrix"]
    figure = _figure(4.6, 4)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    axes.set_title("GAP confusion matrix")
    figure.tight_layout()
    figure.savefig(path)


def plot_gap_gender(scorecard: dict, path: Path, f1_anchor: float | None = None) -> None:
    names = ["overall", "masculine", "feminine"]
    figure = _figure(5, 3.4)
    axes = figure.add_subplot(1, 1, 1)
    width = 0.27
    for k, measure in enumerate(("precision", "recall", "f1")):
        axes.bar([i + (k - 1) * width for i in range(3)], [scorecard[n][measure] for n in names], width, label=measure)
    if f1_anchor is not None:
        axes.axhline(f1_anchor, color="grey", linestyle="--", linewidth=1, label="GAP baseline F1")
    axes.set_xticks(range(3), names)
    axes.set_ylim(0, 100)
    axes.legend(fontsize=8)
    axes.set_title("GAP scorer by gender")
    figure.tight_layout()
    figure.savefig(path)


def plot_question_types(breakdown: list[dict], path: Path) -> None:
    figure = _figure(7, 3.4)
    axes = figure.add_subplot(1, 1, 1)
    names = [row["type"] for row in breakdown]
    positions = range(len(names))
    axes.bar([p - 0.2 for p in positions], [row["exact"] for row in breakdown], 0.4, label="EM")
    axes.bar([p + 0.2 for p in positions], [row["f1"] for row in breakdown], 0.4, label="F1")
    axes.set_xticks(list(positions), [f"{row['type']}\n({row['count']})" for row in breakdown])
    axes.set_ylim(0, 100)
    axes.legend(fontsize=8)
    axes.set_title("SQuAD by question type")
    figure.tight_layout()
    figure.savefig(path)


def plot_null_odds(null_odds: dict, threshold: float, best_threshold: float | None, path: Path) -> None:
    figure = _figure(6, 3.4)
    axes = figure.add_subplot(1, 1, 1)
    values = null_odds["has_answer"] + null_odds["no_answer"]
    bins = 40 if values else 1
    axes.hist([null_odds["has_answer"], null_odds["no_answer"]], bins=bins, label=["has answer", "no answer"],
              alpha=0.7, histtype="stepfilled")
    axes.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:g}")
    if best_threshold is not None:
        axes.axvline(best_threshold, color="red", linestyle=":", linewidth=1, label=f"best F1 thresh {best_threshold:.3g}")
    axes.set_xlabel("null score - best span score")
    axes.legend(fontsize=8)
    axes.set_title("SQuAD v2 null odds")
    figure.tight_layout()
    figure.savefig(path)
