"""The top-level summary of a FullRun: one page linking every report, profile and log."""

from __future__ import annotations

import json
import os
from pathlib import Path

from prep.artifact import write_text_atomic
from prep.folders import MANIFEST, EvalFolder, FeaturesFolder, RunFolder
from tasks import get_task

SUMMARY = "summary.md"  # a FullRun's (or a user-data entry's) own output
SKIPS_LISTED = 100  # rows left out that the summary lists one by one; the manifests list every one

def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _fmt(value, spec: str) -> str:
    return format(value, spec) if isinstance(value, (int, float)) else ""


def _link(target: Path, start: Path) -> str:
    return os.path.relpath(Path(target).resolve(), Path(start).resolve())


def _subset_note(features: dict, task: str) -> str:
    """'train on 1 of 442 articles, ...' for the task's feature folders built from part of their file."""
    parts = []
    for name, folder in features.items():
        if not name.startswith(f"{task}-"):
            continue
        subset = (_read(FeaturesFolder(folder).manifest).get("input") or {}).get("subset")
        if subset and subset["used"] < subset["of"]:
            parts.append(f"{name[len(task) + 1:]} on {subset['used']} of {subset['of']} {subset['unit']}")
    return ", ".join(parts)


def _left_out(splits: dict, features: dict, here: Path) -> list[str]:
    """The "Rows left out" section: every row a splits or features manifest records as skipped, counted
    per step and listed (file, line or row, id, reason) up to ``SKIPS_LISTED``."""
    steps = []  # (step, manifest path, file name, records)
    for name, folder in splits.items():
        manifest = Path(folder) / MANIFEST
        steps.append((f"{name} splits", manifest, None, _read(manifest).get("skipped") or []))
    for name, folder in features.items():
        manifest = _read(FeaturesFolder(folder).manifest)
        source = Path((manifest.get("input") or {}).get("path") or "").name
        steps.append((f"{name} features", FeaturesFolder(folder).manifest, source, manifest.get("skipped") or []))
    total = sum(len(records) for *_, records in steps)
    lines = ["", "## Rows left out", ""]
    if not total:
        return lines + ["None: every row of the input files was used."]
    counts = "; ".join(f"{len(records)} in {step} ([manifest]({_link(manifest, here)}))"
                       for step, manifest, _, records in steps if records)
    lines += [f"{total} rows: {counts}.", "", "| step | file | where | id | reason |", "|---|---|---|---|---|"]
    listed = [(step, record.get("file") or source, record) for step, _, source, records in steps for record in records]
    for step, source, record in listed[:SKIPS_LISTED]:
        cells = [step, Path(str(source or "")).name, record.get("where") or "", record.get("example_id") or "",
                 record.get("reason") or ""]
        lines.append("| " + " | ".join(str(cell).replace("|", "\\|") for cell in cells) + " |")
    if total > SKIPS_LISTED:
        lines += ["", f"The first {SKIPS_LISTED} of {total}; the manifests above list every one."]
    return lines


def write_run_summary(path: str | Path, *, features: dict, models: dict, evals: dict,
                      profiles: dict | None = None, splits: dict | None = None) -> str:
    """Write the run summary (``SUMMARY``) at ``path`` (atomically) and return its text.

    Each argument maps a name (a task, or "<task>-<role>" for features) to an artifact folder;
    ``splits``: a user-data task's splits folder. Rows their manifests record as left out are
    counted and listed.
    """
    path = Path(path)
    here = path.parent
    lines = ["# bertflow run summary", ""]
    lines += ["| task | metric | value | report |", "|---|---|---|---|"]
    for task, folder in evals.items():
        payload = _read(EvalFolder(folder).metrics)
        metrics = payload.get("metrics")
        shown = list(get_task(payload["task"]).eval.headline(metrics).items()) if metrics else []
        for label, value in shown or [("(no metrics)", "")]:
            value = _fmt(value, ".4g")
            lines.append(f"| {task} | {label} | {value} | [report]({_link(EvalFolder(folder).report, here)}) |")
    notes = [(task, _subset_note(features, task)) for task in evals]
    notes = [f"{task}: {note}" for task, note in notes if note]
    if notes:
        lines += ["", "**Smoke-size subsets, not results**: " + "; ".join(notes) + ". These figures only show that "
                  "the path works; published results and how to reproduce them: docs/results/README.md."]
    lines += ["", "## Training", "", "| task | wall s | sequences/s | final train loss | run folder |", "|---|---|---|---|---|"]
    for task, folder in models.items():
        metrics = _read(RunFolder(folder).metrics)
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
        counts = _read(FeaturesFolder(folder).manifest).get("counts", {})
        lines.append(f"| {name} | {counts.get('features_out', '')} | {counts.get('examples_skipped', '')} | "
                     f"[{Path(folder).name}]({_link(folder, here)}) |")
    lines += _left_out(splits or {}, features, here)
    if models:
        spec = ",".join(f"{task}:{RunFolder(folder).tensorboard}" for task, folder in models.items())
        lines += ["", "## TensorBoard", "", "```", f"tensorboard --logdir_spec {spec}", "```"]
    text = "\n".join(lines) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return text
