"""report.md + PNG plots for one evaluation: what a person reads instead of logs.

Sections: headline metrics next to published anchors, the task's own sections (its
``report_sections``: e.g. GAP's scorer card by gender and confusion matrix, SQuAD's EM/F1 by
question type and v2 null-odds), training curves (every scalar in the training run's
TensorBoard logs under ``tb/``), throughput (training metrics.json and this evaluation), the
run's configuration and artifact hashes.

Plots are in :mod:`eval.plots`.
:func:`parse_metrics_table` reads the metrics table back (tests, scripts).
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.plots import plot_training_curves
from prep.folders import EvalFolder, RunFolder

CURVES_PNG = "training_curves.png"

# What the training run's metrics.json says about speed (train.loop writes these keys, the
# measured ones under "throughput").
TRAIN_THROUGHPUT_KEYS = (
    "sequences_per_second", "tokens_per_second", "padded_tokens_per_second", "padding_fraction", "train_seconds",
    "wall_seconds", "steps", "epochs_completed", "world_size", "device", "precision", "global_batch_size",
    "micro_batch_size", "accumulation_steps", "note",
)


# ---------------------------------------------------------------------------------------------
# metrics table
# ---------------------------------------------------------------------------------------------


def metric_rows(summary: dict, spec) -> list[tuple[str, float | None, str, float | None, str]]:
    """(name, value, formatted, anchor, anchor source) for the report's metrics table.

    The task's ``spec.metric_rows(summary)`` (``spec``: its :class:`tasks.spec.EvalSpec`) gives (name, value, format, (anchor, source) or None).
    """
    rows = []

    def add(name, value, fmt, published=None):
        anchor, source = published or (None, "")
        text = "n/a" if value is None else format(value, fmt)
        rows.append((name, value, text, anchor, source))

    for name, value, fmt, anchor in spec.metric_rows(summary):
        add(name, value, fmt, anchor)
    return rows


def _metrics_table(summary: dict, spec) -> list[str]:
    lines = ["| Metric | This run | Anchor | Anchor source |", "|---|---:|---:|---|"]
    for name, _, text, anchor, source in metric_rows(summary, spec):
        lines.append(f"| {name} | {text} | {'' if anchor is None else anchor} | {source} |")
    return lines


def parse_metrics_table(report_text: str) -> dict[str, dict]:
    """``{metric: {"value": float|None, "anchor": float|None}}`` from a report's Metrics section."""
    section = report_text.split("## Metrics", 1)
    if len(section) != 2:
        raise ValueError("report has no '## Metrics' section")
    table = {}
    for line in section[1].splitlines()[1:]:
        if line.startswith("## "):
            break
        if not line.startswith("|") or line.startswith("|---") or line.startswith("| Metric"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name, value, anchor = cells[0], cells[1], cells[2]
        table[name] = {
            "value": None if value == "n/a" else float(value),
            "anchor": float(anchor) if anchor else None,
        }
    return table


# ---------------------------------------------------------------------------------------------
# inputs: TensorBoard scalars, training metrics
# ---------------------------------------------------------------------------------------------


def read_tensorboard_scalars(tb_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series under ``tb_dir`` (sub-folders prefix their tags), as (step, value)."""
    tb_dir = Path(tb_dir)
    if not tb_dir.is_dir():
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    series: dict[str, list[tuple[int, float]]] = {}
    folders = sorted({path.parent for path in tb_dir.rglob("events.out.tfevents*")})
    for folder in folders:
        accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
        accumulator.Reload()
        prefix = "" if folder == tb_dir else f"{folder.relative_to(tb_dir).as_posix()}/"
        for tag in accumulator.Tags().get("scalars", []):
            points = series.setdefault(prefix + tag, [])
            points.extend((event.step, event.value) for event in accumulator.Scalars(tag))
    return {tag: sorted(points) for tag, points in series.items()}


# ---------------------------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------------------------


def _kv_table(pairs: dict, headers=("Key", "Value")) -> list[str]:
    lines = [f"| {headers[0]} | {headers[1]} |", "|---|---|"]
    for key, value in pairs.items():
        lines.append(f"| {key} | {_cell(value)} |")
    return lines


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)
    return text.replace("|", "\\|")


def _hashes(inputs: dict) -> dict:
    out = {"data": f"{Path(inputs['data']['path']).name} sha256 {inputs['data']['sha256'][:16]}"}
    for name, digest in (inputs.get("encoder_weights_sha256") or {}).items():
        out[f"encoder {name}"] = f"sha256 {digest[:16]}"
    out[RunFolder.HEAD] = f"sha256 {inputs['head_sha256'][:16]}"
    out[RunFolder.TRAIN_CONFIG] = f"sha256 {inputs['train_config_sha256'][:16]}"
    out["features manifest"] = f"sha256 {inputs['features_manifest_sha256'][:16]}"
    out["tokenizer fingerprint"] = str(inputs.get("tokenizer_fingerprint"))[:16]
    return out


def write_report(out_dir: str | Path, summary: dict, spec, model_dir: str | Path | None = None,
                 plot_data: dict | None = None) -> list[Path]:
    """Write ``report.md`` and its PNGs into ``out_dir``; returns the files written. ``spec`` is the
    task's :class:`tasks.spec.EvalSpec` (its metric rows and report sections)."""
    out_dir = Path(out_dir)
    written = []
    task = summary["task"]
    inputs = summary.get("inputs") or {}
    train_config = summary.get("train_config") or {}
    title = Path(inputs.get("model_dir", "run")).name
    lines = [f"# Evaluation report: {task.upper()} - {title}", ""]
    lines.append(
        f"Evaluated {summary.get('created', '')} on `{Path((inputs.get('data') or {}).get('path', '?')).name}` "
        f"({_counts_line(summary)}), in {summary.get('seconds', 0):.1f} s."
    )
    lines += ["", "## Metrics", ""] + _metrics_table(summary, spec) + [""]
    lines += spec.report_sections(summary, out_dir, plot_data, written)

    lines += ["## Training curves", ""]
    series = read_tensorboard_scalars(RunFolder(model_dir).tensorboard) if model_dir else {}
    drawn = plot_training_curves(series, out_dir / CURVES_PNG) if series else []
    if drawn:
        written.append(out_dir / CURVES_PNG)
        lines += [f"![training curves]({CURVES_PNG})", "", "| Series | Points | First | Last | Min | Max |",
                  "|---|---:|---:|---:|---:|---:|"]
        for tag in drawn:
            values = [value for _, value in series[tag]]
            lines.append(f"| {tag} | {len(values)} | {values[0]:.4g} | {values[-1]:.4g} | {min(values):.4g} | {max(values):.4g} |")
    else:
        lines.append(f"No TensorBoard scalars found under the training run's `{RunFolder.TENSORBOARD}/`.")
    lines.append("")
    lines += _eval_history_lines(summary.get("train_metrics") or {})

    lines += ["## Throughput", ""] + _throughput_lines(summary) + [""]
    lines += ["## Configuration", "", "Evaluation:", ""] + _kv_table(summary.get("config") or {}) + [""]
    if train_config:
        lines += [f"Training (`{RunFolder.TRAIN_CONFIG}`):", ""] + _kv_table(train_config) + [""]
    features_config = inputs.get("features_config")
    if features_config:
        lines += ["Features (prep manifest):", ""] + _kv_table(features_config) + [""]
    if inputs:
        lines += ["## Artifacts", "", f"Model: `{inputs.get('model_dir')}`  ", f"Features: `{inputs.get('features_dir')}`", ""]
        lines += _kv_table(_hashes(inputs), ("Artifact", "Hash")) + [""]
    report = EvalFolder(out_dir).report
    report.write_text("\n".join(lines), encoding="utf-8")
    written.append(report)
    return written


def _eval_history_lines(train_metrics: dict) -> list[str]:
    """The in-training evaluation after each epoch (train's metrics.json ``eval`` list)."""
    history = [row for row in train_metrics.get("eval") or [] if isinstance(row, dict)]
    if not history:
        return []
    columns = []
    for row in history:
        columns += [key for key in row if key not in columns]
    lines = ["Evaluation during training, per epoch:", "", "| " + " | ".join(columns) + " |",
             "|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row.get(key, "")) for key in columns) + " |" for row in history]
    return lines + [""]


def _counts_line(summary: dict) -> str:
    counts = summary.get("counts") or {}
    parts = [f"{value} {key.replace('_', ' ')}" for key, value in counts.items()]
    return ", ".join(parts) or "no counts"


def train_throughput(train_metrics: dict | None) -> dict:
    """Speed and set-up figures of a training run's metrics.json (top level or its "throughput")."""
    train_metrics = train_metrics or {}
    merged = {**train_metrics, **(train_metrics.get("throughput") or {})}
    if isinstance(train_metrics.get("steps"), int):
        merged["steps"] = train_metrics["steps"]  # all steps; throughput's excludes warm-up
    return {key: merged[key] for key in TRAIN_THROUGHPUT_KEYS if merged.get(key) is not None}


def _throughput_lines(summary: dict) -> list[str]:
    lines = []
    picked = train_throughput(summary.get("train_metrics"))
    if picked:
        lines += [f"Training (`{RunFolder.METRICS}` of the training run):", ""] + _kv_table(picked, ("Measure", "Value")) + [""]
    else:
        lines += [f"No throughput figures in the training run's {RunFolder.METRICS}.", ""]
    timing = summary.get("timing") or {}
    if timing:
        lines += ["This evaluation:", ""] + _kv_table(timing, ("Measure", "Value"))
    return lines
