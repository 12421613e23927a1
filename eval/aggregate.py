"""Mean and spread over repeated runs: ``python -m eval aggregate RUN_DIR... --by head [--ensemble] --out FILE.md``.

Each RUN_DIR is an evaluation folder. Runs are grouped by training settings (``--by``, default
``head``); a group's runs normally differ only in their seed. Per group: how many runs, their
seeds, and mean / sample standard deviation / min / max of each headline metric. With
``--ensemble`` (tasks with per-example probabilities, e.g. GAP), the group's runs are also
scored together: their probabilities averaged per example, scored like any system. Every run is listed with the
hashes that identify what produced it (head weights, encoder weights, test data), so a table
row can be traced to artifacts. ``--out FILE.md`` writes the table there and the numbers to
``FILE.json``.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from eval.run import load_run
from prep.artifact import write_text_atomic



def _run_record(run_dir: Path, summary: dict, by: tuple[str, ...], names: tuple[str, ...]) -> dict:
    train = summary.get("train_config") or {}
    inputs = summary.get("inputs") or {}
    metrics = summary["metrics"]
    missing = [key for key in by if key not in train]
    if missing:
        raise ValueError(f"{run_dir}: its training config has no {missing} to group by")
    return {
        "eval_dir": str(run_dir),
        "model_dir": Path(str(inputs.get("model_dir", "?"))).name,
        "seed": train.get("seed"),
        "group": {key: train[key] for key in by},
        "metrics": {key: metrics[key] for key in names if key in metrics},
        "head_sha256": inputs.get("head_sha256"),
        "encoder_sha256": inputs.get("encoder_weights_sha256"),
        "data_sha256": (inputs.get("data") or {}).get("sha256"),
        "data": Path(str((inputs.get("data") or {}).get("path", "?"))).name,
    }


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def aggregate_runs(run_dirs, spec, by=("head",), ensemble: bool = False) -> dict:
    """``{"task", "by", "groups": [...], "runs": [...]}`` for evaluation folders ``run_dirs`` of one
    task, whose :class:`tasks.spec.EvalSpec` is ``spec`` (the metrics to aggregate, its ensemble)."""
    run_dirs = [Path(d) for d in run_dirs]
    if not run_dirs:
        raise ValueError("aggregate needs at least one evaluation folder")
    summaries = [load_run(d) for d in run_dirs]
    tasks = {s["task"] for s in summaries}
    if len(tasks) != 1:
        raise ValueError(f"aggregate one task at a time, got {sorted(tasks)}")
    task = tasks.pop()
    if ensemble and spec.ensemble is None:
        raise ValueError(f"--ensemble averages per-example probabilities; task {task} has none to average")
    by = tuple(by)
    records = [_run_record(d, s, by, spec.aggregate_metrics) for d, s in zip(run_dirs, summaries)]
    groups: dict[str, list[int]] = {}
    for index, record in enumerate(records):
        groups.setdefault(json.dumps(record["group"], sort_keys=True), []).append(index)
    out_groups = []
    for key, members in groups.items():
        seeds = [records[i]["seed"] for i in members]
        if len(set(map(str, seeds))) != len(seeds):
            raise ValueError(f"group {key} has runs with the same seed {seeds}: one run counted twice?")
        # A metric undefined for some run (e.g. bias with a zero F1) is left out of the group's row.
        names = [name for name in spec.aggregate_metrics
                 if all(records[i]["metrics"].get(name) is not None for i in members)]
        group = {"group": json.loads(key), "runs": len(members), "seeds": seeds,
                 "metrics": {name: _spread([records[i]["metrics"][name] for i in members]) for name in names}}
        if ensemble and len(members) > 1:
            group["ensemble"] = spec.ensemble([run_dirs[i] for i in members], [summaries[i] for i in members])
        out_groups.append(group)
    return {"task": task, "by": list(by), "groups": out_groups, "runs": records}


def _cell(spread: dict, digits: int) -> str:
    text = f"{spread['mean']:.{digits}f}"
    return text + (f" ± {spread['std']:.{digits}f}" if spread["std"] else "")


def format_markdown(result: dict, spec) -> str:
    task = result["task"]
    labels, digits = spec.metric_labels, spec.metric_digits
    names = [n for n in spec.aggregate_metrics if any(n in g["metrics"] for g in result["groups"])]
    by = result["by"]
    lines = [f"Mean ± sample standard deviation over the runs of each group ({task}).", "",
             "| " + " | ".join([*by, "runs", "seeds", *(labels.get(n, n) for n in names)]) + " |",
             "|" + "---|" * (len(by) + 2 + len(names))]
    for group in result["groups"]:
        cells = [str(group["group"][k]) for k in by] + [str(group["runs"]), ",".join(map(str, group["seeds"]))]
        cells += [_cell(group["metrics"][n], digits.get(n, 1)) if n in group["metrics"] else "-" for n in names]
        lines.append("| " + " | ".join(cells) + " |")
        if "ensemble" in group:
            ens = group["ensemble"]
            cells = [str(group["group"][k]) for k in by] + ["ensemble", "all"]
            cells += [f"{ens[n]:.{digits.get(n, 1)}f}" if ens.get(n) is not None else "-" for n in names]
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Runs (evaluation folder, training folder, hashes of what produced them):", "",
              "| " + " | ".join([*by, "seed", "eval", "model", "head sha256", "data", *(labels.get(n, n) for n in names)]) + " |",
              "|" + "---|" * (len(by) + 5 + len(names))]
    for run in result["runs"]:
        cells = [str(run["group"][k]) for k in by] + [str(run["seed"]), Path(run["eval_dir"]).name, run["model_dir"],
                                                     (run["head_sha256"] or "?")[:12], run["data"]]
        cells += [f"{run['metrics'][n]:.{digits.get(n, 1)}f}" if run["metrics"].get(n) is not None else "-"
                  for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def aggregate_to_files(run_dirs, spec, out: str | Path | None, by=("head",), ensemble: bool = False) -> str:
    """The markdown table; with ``out`` (a .md path) also written there, with the numbers in the .json beside it."""
    result = aggregate_runs(run_dirs, spec, by, ensemble)
    markdown = format_markdown(result, spec)
    if out is not None:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out.with_suffix(".json"), json.dumps(result, indent=2) + "\n")
        write_text_atomic(out.with_suffix(".md"), markdown)
    return markdown
