"""The top-level summary of a FullRun: one page linking every report, profile and log."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prep.artifact import write_text_atomic

HEADLINE = {
    "squad": (("exact_match", "EM"), ("exact", "EM"), ("f1", "F1")),
    "gap": (("f1_overall", "F1"), ("bias_f_over_m", "bias F/M"), ("log_loss", "log loss"), ("accuracy", "accuracy")),
}


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else ""


def _link(target: Path, start: Path) -> str:
    return os.path.relpath(Path(target).resolve(), Path(start).resolve())


def write_run_summary(path: str | Path, *, features: dict, models: dict, evals: dict,
                      profiles: dict | None = None) -> str:
    """Write ``summary.md`` at ``path`` (atomically) and return its text.

    Each argument maps a name ("gap", "squad-train", ...) to an artifact folder.
    """
    path = Path(path)
    here = path.parent
    lines = ["# bertflow run summary", ""]
    lines += ["| task | metric | value | report |", "|---|---|---|---|"]
    for task, folder in evals.items():
        metrics = _read(Path(folder) / "metrics.json").get("metrics", {})
        shown = [(label, metrics[key]) for key, label in HEADLINE.get(task, ()) if key in metrics]
        for label, value in shown or [("(no metrics)", "")]:
            value = _fmt(value, ".4g")
            lines.append(f"| {task} | {label} | {value} | [report]({_link(Path(folder) / 'report.md', here)}) |")
    lines += ["", "## Training", "", "| task | wall s | sequences/s | final train loss | run folder |", "|---|---|---|---|---|"]
    for task, folder in models.items():
        metrics = _read(Path(folder) / "metrics.json")
        throughput = metrics.get("throughput", {})
        loss = metrics.get("final_train_loss")
        cells = [_fmt(metrics.get("wall_seconds"), ".0f"), _fmt(throughput.get("sequences_per_second"), ".1f"),
                 _fmt(loss, ".4f")]
        lines.append(f"| {task} | {' | '.join(cells)} | [{Path(folder).name}]({_link(folder, here)}) |")
    for name, folder in (profiles or {}).items():
        # The profile's own section, with its links rewritten relative to this summary.
        from profiling import SUMMARY_JSON, render_markdown

        profile = _read(Path(folder) / SUMMARY_JSON)
        lines += ["", render_markdown(profile, relative_to=here) if profile else f"## Profile: {name} (missing)"]
    lines += ["", "## Features", "", "| name | features | skipped | folder |", "|---|---|---|---|"]
    for name, folder in features.items():
        counts = _read(Path(folder) / "manifest.json").get("counts", {})
        lines.append(f"| {name} | {counts.get('features_out', '')} | {counts.get('examples_skipped', '')} | "
                     f"[{Path(folder).name}]({_link(folder, here)}) |")
    if models:
        spec = ",".join(f"{task}:{Path(folder) / 'tb'}" for task, folder in models.items())
        lines += ["", "## TensorBoard", "", "```", f"tensorboard --logdir_spec {spec}", "```"]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return text
