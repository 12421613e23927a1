"""``profile_summary.json`` and its markdown section ``profile_summary.md``.

The markdown is a self-contained section (``## Profile: ...``) that a run report can paste in;
:func:`render_markdown` can re-render it with links relative to wherever it is included.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from profiling.timeline import CATEGORIES

SCHEMA_VERSION = 1
SUMMARY_JSON = "profile_summary.json"
SUMMARY_MD = "profile_summary.md"
_LABELS = {
    "data_wait": "data wait",
    "forward": "forward",
    "backward": "backward",
    "optimizer_step": "optimizer step",
    "communication": "communication (exposed)",
    "other": "other",
}


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _ms(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _short_path(path: str) -> str:
    parts = Path(path).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else path


def _link(target: str | Path, relative_to: Path | None) -> str:
    target = Path(target)
    if relative_to is None or not target.is_absolute():
        return target.as_posix()
    return Path(os.path.relpath(target, relative_to)).as_posix()


def render_markdown(summary: dict, relative_to: str | Path | None = None) -> str:
    """The summary as a markdown section; artifact links are relative to ``relative_to``
    (default: the artifact folder itself, where ``profile_summary.md`` is written)."""
    base = Path(relative_to) if relative_to is not None else None
    artifact = Path(summary["artifact_dir"])
    step, setup = summary["step"], summary["setup"]
    lines = [
        f"## Profile: where a {setup['task']} training step's time goes",
        "",
        f"{summary['backend_label']}; {setup['device']} x {setup['world_size']} "
        f"({setup['dist_backend'] or 'one process'}), {setup['precision']}, global batch "
        f"{setup['global_batch_size']} = {setup['micro_batch_size']} per device x "
        f"{setup['accumulation_steps']} accumulation x {setup['world_size']} rank(s); model "
        f"`{_short_path(setup['model_dir'])}`; features: {setup['features']}. "
        f"{setup['active_steps']} steps recorded after {setup['warmup_steps']} warm-up steps, "
        f"averaged over {step['ranks']} rank(s).",
        "",
        "| part of a step | ms / step | share |",
        "|---|---:|---:|",
    ]
    for name in CATEGORIES:
        lines.append(f"| {_LABELS[name]} | {_ms(step['split_ms'][name])} | {_pct(step['shares'][name])} |")
    lines.append(f"| **step** | **{_ms(step['step_ms'])}** | {_pct(sum(step['shares'].values()))} |")
    comm = step["communication"]
    lines += ["", "Each instant of a step counts once: device compute first (by the range that launched it), "
              "then communication that no compute hid, then the range the training thread was in."]
    if comm["busy_ms"]:
        lines += ["", f"**Communication** (gradient all-reduce): busy {_ms(comm['busy_ms'])} ms per step = "
                  f"{_pct(comm['share_of_step'])} of a step; {_pct(comm['overlap_with_compute'])} of that time "
                  f"overlaps compute, {_pct(comm['overlap_with_forward_backward'])} falls inside the "
                  f"forward/backward ranges, and {_ms(comm['exposed_ms'])} ms per step is exposed. "
                  f"(For scale: a published BERT SQuAD fine-tune on 2 GPUs spent about 10% of a step in all-reduce.)"]
    else:
        lines += ["", "**Communication**: none in the window"
                  + (" (one process: no gradient all-reduce)." if setup["world_size"] == 1 else ".")]
    if summary.get("top_ops"):
        clock = summary["top_ops"][0]["clock"]
        lines += ["", f"Top {len(summary['top_ops'])} {'kernels' if clock == 'device' else 'operators'} by "
                  f"self {'GPU' if clock == 'device' else 'CPU'} time (rank 0, whole window):", "",
                  "| name | calls | self ms total | ms / step |", "|---|---:|---:|---:|"]
        for op in summary["top_ops"]:
            name = op["name"] if len(op["name"]) <= 80 else op["name"][:77] + "..."
            lines.append(f"| `{name}` | {op['calls']} | {_ms(op['self_ms_total'])} | {_ms(op['self_ms_per_step'])} |")
    lines += _scaling_lines(summary.get("scaling"))
    lines += _prep_lines(summary.get("prep_scaling"), base)
    lines += ["", "### Files", ""]
    for kind, paths in summary["artifacts"].items():
        if paths:
            links = ", ".join(f"[{Path(p).name}]({_link(artifact / p, base)})" for p in paths)
            lines.append(f"- {kind}: {links}")
    lines += [f"- {hint}" for hint in summary.get("open_with", [])]
    for note in summary.get("notes", []):
        lines += [f"- note: {note}"]
    return "\n".join(lines) + "\n"


def _scaling_lines(scaling: dict | None) -> list[str]:
    if scaling is None:
        return ["", "### DDP scaling", "", "Not run (scaling disabled)."]
    lines = ["", "### DDP scaling (same global batch)", "",
             f"{scaling['steps']} optimizer steps per run, no profiler attached; time excludes each process's "
             f"first step. {scaling['device']} / {scaling['dist_backend']}, {scaling['precision']}.", "",
             "| world size | threads / process | s (timed steps) | s / step | speed-up | efficiency "
             "| time vs 1 process |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in scaling["rows"]:
        if row.get("skipped"):
            lines.append(f"| {row['world_size']} | | {row['skipped']} | | | | |")
            continue
        lines.append(f"| {row['world_size']} | {row.get('threads_per_process') or ''} | {row['seconds']:.2f} "
                     f"| {row['step_seconds']:.3f} | {_x(row['speedup'])} | {_pct(row['efficiency'])} "
                     f"| {_pct(row['time_vs_single'])} |")
    lines += ["", "Seeds for comparison (epoch time, 2 processes vs 1, 2 GPUs): NCCL 61%, gloo 75%."]
    if scaling.get("notes"):
        lines += [""] + [f"- {note}" for note in scaling["notes"]]
    return lines


def _x(value) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _prep_lines(prep: dict | None, base: Path | None) -> list[str]:
    lines = ["", "### Prep scaling (time vs processes)", ""]
    if not prep or not prep.get("png"):
        return lines + ["No prep scaling plot configured."]
    png = Path(prep["png"])
    if not prep.get("exists"):
        return lines + [f"`{png}` not found: run `python -m bench.prep_scaling --out {png.parent}` to make it."]
    lines.append(f"![prep time vs nproc]({_link(png, base)})")
    rows = prep.get("rows") or []
    if rows:
        impls = sorted({r["impl"] for r in rows})
        best: dict[tuple, float] = {}
        for r in rows:  # the fastest of repeated runs, as bench.prep_scaling keeps
            key = (r["input"], r["nproc"], r["impl"])
            best[key] = min(best.get(key, float("inf")), r["seconds"])
        lines += ["", "Seconds to build SQuAD train features (fastest run per point):", "",
                  "| input | nproc | " + " | ".join(impls) + " |", "|---|---:|" + "---:|" * len(impls)]
        for name, nproc in sorted({(r["input"], r["nproc"]) for r in rows}):
            cells = [f"{best[(name, nproc, impl)]:.2f}" if (name, nproc, impl) in best else "" for impl in impls]
            lines.append(f"| {name} | {nproc} | " + " | ".join(cells) + " |")
    return lines


def read_prep_scaling(png: str | Path | None) -> dict | None:
    """Where the prep plot is, whether it exists, and the rows of the ``prep_scaling.json`` beside it."""
    if not png:
        return None
    png = Path(png).resolve()
    found = {"png": str(png), "exists": png.is_file(), "rows": []}
    data = png.with_name("prep_scaling.json")
    if data.is_file():
        try:
            rows = json.loads(data.read_text(encoding="utf-8")).get("rows", [])
            found["rows"] = [{k: r[k] for k in ("input", "impl", "nproc", "seconds")} for r in rows]
        except (ValueError, KeyError):
            pass
    return found
