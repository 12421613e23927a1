"""Side-by-side table of evaluation runs: ``python -m eval compare RUN_DIR... [--out FILE]``.

Each RUN_DIR is an evaluation output folder (its metrics.json). One table per task; columns
are the headline metrics, the training set-up, throughput, and every training setting that
differs between the runs compared (so the reason two runs differ is in the table).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Mapping

from eval.report import train_throughput
from prep.artifact import write_text_atomic
from eval.run import load_run

# Settings that never explain a score difference (paths, logging, resume plumbing).
_IGNORED_SETTINGS = {
    "out_dir", "run_dir", "features_dir", "eval_features_dir", "tokenizer", "progress_bar", "resume", "log_every_n_steps",
    "save_every_n_steps", "num_workers", "nvtx", "schema_version", "device",
}
_SETUP = ("model", "head", "epochs", "lr", "global_batch_size", "precision", "world_size")




def _model_name(path) -> str:
    """A model folder's name; packaged models keep their weights in a folder called "model"."""
    path = Path(str(path))
    return path.parent.name if path.name == "model" else path.name


def _run_names(run_dirs: list[Path]) -> list[str]:
    names = [p.name for p in run_dirs]
    if len(set(names)) == len(names):
        return names
    return [f"{p.parent.name}/{p.name}" for p in run_dirs]


def comparison_rows(run_dirs, evals: Mapping) -> list[dict]:
    """One flat dict per run (task, data, metrics, set-up, throughput, differing settings); ``evals``
    maps each run's task name to its :class:`tasks.spec.EvalSpec` (its headline metrics)."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("compare needs at least one evaluation folder")
    summaries = [load_run(d) for d in run_dirs]
    rows = []
    for name, summary in zip(_run_names(run_dirs), summaries):
        train = summary.get("train_config") or {}
        row = {"run": name, "task": summary["task"],
               "data": Path(((summary.get("inputs") or {}).get("data") or {}).get("path", "?")).name}
        row.update(evals[summary["task"]].headline(summary["metrics"]))
        row.update({
            "model": _model_name(train.get("model_dir", "?")),
            **{key: train.get(key) for key in _SETUP if key != "model"},
            "train seq/s": train_throughput(summary.get("train_metrics")).get("sequences_per_second"),
            "eval features/s": (summary.get("timing") or {}).get("features_per_second"),
        })
        rows.append((row, train))
    # Settings that differ between runs of the same task become extra columns.
    for task in {row["task"] for row, _ in rows}:
        group = [(row, train) for row, train in rows if row["task"] == task]
        keys = sorted({key for _, train in group for key in train} - _IGNORED_SETTINGS - set(_SETUP) - {"model_dir"})
        for key in keys:
            values = {json.dumps(train.get(key), sort_keys=True) for _, train in group}
            if len(values) > 1:
                for row, train in group:
                    row[key] = train.get(key)
    return [row for row, _ in rows]


_FORMATS = {"log loss": ".4f", "bias F/M": ".3f", "best F1 thresh": ".4f", "lr": "g"}


def _fmt(value, column: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if column in _FORMATS:
            return format(value, _FORMATS[column])
        return f"{value:.4g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value).replace("|", "\\|")


def format_markdown(rows: list[dict]) -> str:
    """One markdown table per task."""
    out = []
    for task in sorted({row["task"] for row in rows}):
        group = [row for row in rows if row["task"] == task]
        columns = []
        for row in group:
            columns += [key for key in row if key not in columns and key != "task"]
        out.append(f"### {task}\n")
        out.append("| " + " | ".join(columns) + " |")
        out.append("|" + "---|" * len(columns))
        for row in group:
            out.append("| " + " | ".join(_fmt(row.get(key), key) for key in columns) + " |")
        out.append("")
    return "\n".join(out)


def format_csv(rows: list[dict]) -> str:
    columns = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: row.get(key) for key in columns})
    return buffer.getvalue()


def compare_runs(run_dirs, evals: Mapping, out: str | Path | None = None) -> str:
    """The markdown table of ``run_dirs``; with ``out``, also written there (.md, .csv or .json).
    ``evals``: task name -> :class:`tasks.spec.EvalSpec`, as in :func:`comparison_rows`."""
    rows = comparison_rows(run_dirs, evals)
    markdown = format_markdown(rows)
    if out is not None:
        out = Path(out)
        text = {".csv": lambda: format_csv(rows), ".json": lambda: json.dumps(rows, indent=2) + "\n"}.get(
            out.suffix.lower(), lambda: markdown)()
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text)
    return markdown
