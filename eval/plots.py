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


def figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_training_curves(series: dict, path: Path, max_panels: int = 12) -> list[str]:
    """One panel per scalar tag (losses, then learning rate, then eval metrics); returns the tags drawn."""
    tags = sorted(series, key=lambda tag: (curve_group(tag), "eval" in tag.lower(), tag))[:max_panels]
    if not tags:
        return []
    columns = min(3, len(tags))
    rows = math.ceil(len(tags) / columns)
    fig = figure(5 * columns, 3.2 * rows)
    for i, tag in enumerate(tags):
        axes = fig.add_subplot(rows, columns, i + 1)
        steps = [step for step, _ in series[tag]]
        values = [value for _, value in series[tag]]
        axes.plot(steps, values, marker="o" if len(steps) <= 20 else None, linewidth=1.2)
        axes.set_title(tag, fontsize=10)
        axes.set_xlabel("step")
        axes.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    return tags


def plot_confusion(confusion: dict, path: Path, title: str = "Confusion matrix") -> None:
    labels, matrix = confusion["labels"], confusion["matrix"]
    fig = figure(4.6, 4)
    axes = fig.add_subplot(1, 1, 1)
    image = axes.imshow(matrix, cmap="Blues")
    fig.colorbar(image, ax=axes)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, count in enumerate(row):
            axes.text(j, i, str(count), ha="center", va="center", color="white" if count > top / 2 else "black")
    axes.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
