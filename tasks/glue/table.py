"""The GLUE table: per task its official metric(s), GLUE's two averages and the coverage, over seeds.

    python -m tasks.glue.table runs/results/glue-<hash>/glue.json          # print the Markdown again

Rows: the mean ± sample standard deviation over seeds, the max over seeds (per task the seed with
the best task score, both of its metrics shown), every seed, and the write-up's BERT-base rows
(Hugging Face's run_glue on dev; the BERT paper, GLUE test server) with their averages taken over
the same tasks. Averages follow GLUE: a task with two metrics counts as their mean; "average w/o
WNLI" leaves WNLI out as the BERT paper does; both are over the tasks in the table, and a row that
lacks one of them has no average. Coverage: scored dev rows / dev rows, over every evaluation.
Written as ``glue.md``, ``glue.json`` and ``glue.png`` (bar chart, mean ± std per task, beside
Hugging Face's BERT-base).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from prep.artifact import write_json_atomic, write_text_atomic
from prep.folders import EvalFolder, RunFolder
from tasks.glue.benchmark import ORDER, REFERENCE_ROWS, TASKS
from tasks.glue.metrics import glue_averages, task_score

TABLE = "glue.md"
AVERAGES = ("average_without_wnli", "average_all")
AVERAGE_LABELS = {"average_without_wnli": "avg w/o WNLI", "average_all": "avg all"}


def _load(eval_dir: Path) -> dict:
    return json.loads(EvalFolder(eval_dir).metrics.read_text(encoding="utf-8"))


def run_record(task: str, seed: int, eval_dirs: list[Path]) -> dict:
    """One fine-tune's scores, merged over the dev splits it was scored on (MNLI: matched and mismatched)."""
    scores, rows, scored, dirs, train_seconds = {}, 0, 0, [], None
    for eval_dir in eval_dirs:
        summary = _load(eval_dir)
        glue = summary["glue"]
        if glue["task"] != task:
            raise ValueError(f"{eval_dir}: an evaluation of GLUE {glue['task']}, listed as {task}")
        scores.update(glue["scores"])
        rows += glue["coverage"]["rows"]
        scored += glue["coverage"]["scored"]
        dirs.append(str(eval_dir))
        train_seconds = (summary.get("train_metrics") or {}).get("wall_seconds")
        model_dir = (summary.get("inputs") or {}).get("model_dir")
    return {"task": task, "seed": seed, "scores": scores, "score": task_score(task, scores),
            "coverage": {"rows": rows, "scored": scored}, "eval_dirs": dirs, "run_dir": model_dir,
            "train_seconds": train_seconds}


def _spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "max": max(values), "n": len(values)}


def build_table(evals: dict[tuple[str, int], list[Path]], planned: list[str] | None = None) -> dict:
    """The table's numbers from ``{(task, seed): [evaluation folders]}``.

    ``planned``: every task of the run (default: those with an evaluation); a planned task without one
    has no column figures, and the averages need every planned task.
    """
    records = [run_record(task, seed, dirs) for (task, seed), dirs in sorted(evals.items(), key=lambda kv: (
        ORDER.index(kv[0][0]), kv[0][1]))]
    tasks = sorted({r["task"] for r in records}, key=ORDER.index)
    planned = sorted(set(planned or []) | set(tasks), key=ORDER.index)
    seeds = sorted({r["seed"] for r in records})
    by = {(r["task"], r["seed"]): r for r in records}
    per_seed = {}
    for seed in seeds:
        found = {task: by[(task, seed)]["score"] for task in tasks if (task, seed) in by}
        per_seed[seed] = {"scores": {task: by[(task, seed)]["scores"] for task in found},
                          **(glue_averages(found) if len(found) == len(planned) else dict.fromkeys(AVERAGES))}
    mean, best = {}, {}
    for task in tasks:
        runs = [r for r in records if r["task"] == task]
        keys = TASKS[task].metric_keys()
        mean[task] = {key: _spread([r["scores"][key] for r in runs]) for key in keys}
        mean[task]["score"] = _spread([r["score"] for r in runs])
        top = max(runs, key=lambda r: r["score"])
        best[task] = {**top["scores"], "score": top["score"], "seed": top["seed"]}
    averages = {name: [per_seed[s][name] for s in seeds if per_seed[s][name] is not None] for name in AVERAGES}
    rows, scored = sum(r["coverage"]["rows"] for r in records), sum(r["coverage"]["scored"] for r in records)
    return {
        "tasks": planned, "seeds": seeds, "runs": records,
        "mean": {"tasks": mean, **{name: _spread(values) if values else None for name, values in averages.items()}},
        "max": {"tasks": best, **glue_averages({task: best[task]["score"] if task in best else None
                                                 for task in planned})},
        "per_seed": per_seed,
        "coverage": {"rows": rows, "scored": scored, "share": scored / rows if rows else None},
        "references": reference_rows(planned),
        "train_seconds": sum(r["train_seconds"] or 0.0 for r in records),
    }


def reference_rows(tasks: list[str]) -> dict:
    """The write-up's rows over ``tasks``, with averages where the row has a score for each of them."""
    rows = {}
    for name, scores in REFERENCE_ROWS.items():
        found = {task: task_score(task, scores.get(task, {})) for task in tasks}
        # The paper gives one metric for two-metric tasks: its average uses that figure, as the paper's own does.
        lenient = {task: value if value is not None else _single(task, scores.get(task, {})) for task, value in
                   found.items()}
        rows[name] = {"scores": {task: scores.get(task, {}) for task in tasks}, **glue_averages(lenient)}
    return rows


def _single(task: str, scores: dict) -> float | None:
    values = [scores[key] for key in TASKS[task].metric_keys() if key in scores]
    return values[0] if len(values) == 1 else None


# --- Markdown ----------------------------------------------------------------------------------
def _pair(values: list[str]) -> str:
    return "/".join(values)


def _seeds_note(n: int, seeds: int) -> str:
    return "" if n == seeds else f" (n={n})"


def _mean_cell(task: str, mean: dict | None, seeds: int) -> str:
    if mean is None:
        return "not run"
    cells = _pair([f"{mean[key]['mean']:.1f} ± {mean[key]['std']:.1f}" for key in TASKS[task].metric_keys()])
    return cells + _seeds_note(mean["score"]["n"], seeds)


def _value_cell(task: str, scores: dict | None) -> str:
    if scores is None:
        return "not run"
    cells = [f"{scores[key]:.1f}" if scores.get(key) is not None else "-" for key in TASKS[task].metric_keys()]
    return "-" if set(cells) == {"-"} else _pair(cells)


def _average_cell(value, seeds: int = 0) -> str:
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{value['mean']:.1f} ± {value['std']:.1f}" + _seeds_note(value["n"], seeds)
    return f"{value:.1f}"


def format_markdown(table: dict, model: str = "", not_run: list[str] | None = None) -> str:
    tasks, seeds = table["tasks"], table["seeds"]
    coverage = table["coverage"]
    share = f"{100 * coverage['share']:.0f}% ({coverage['scored']}/{coverage['rows']})"
    header = [f"{TASKS[t].folder} ({TASKS[t].metric_label()})" for t in tasks]
    lines = ["| row | " + " | ".join(header + ["avg w/o WNLI", "avg all", "coverage"]) + " |",
             "|---|" + "---:|" * (len(tasks) + 3)]

    def row(name, cells, averages, cover=""):
        lines.append(f"| {name} | " + " | ".join(cells + [_average_cell(averages.get(a), len(seeds))
                                                          for a in AVERAGES] + [cover]) + " |")

    who = f"{model}, " if model else ""
    row(f"{who}mean ± std ({len(seeds)} seed{'s' if len(seeds) > 1 else ''})",
        [_mean_cell(t, table["mean"]["tasks"].get(t), len(seeds)) for t in tasks], table["mean"], share)
    row(f"{who}max over seeds", [_value_cell(t, table["max"]["tasks"].get(t)) for t in tasks], table["max"], share)
    for seed in seeds:
        found = table["per_seed"][str(seed)] if str(seed) in table["per_seed"] else table["per_seed"][seed]
        row(f"{who}seed {seed}", [_value_cell(t, found["scores"].get(t)) for t in tasks], found)
    for name, reference in table["references"].items():
        row(name, [_value_cell(t, reference["scores"][t]) for t in tasks], reference, "not stated")
    notes = ["", f"Scores in percent on the dev sets; {len(seeds)} seed(s) per task; averages over the {len(tasks)} "
             "tasks shown (a task with two metrics counts as their mean; w/o WNLI as the BERT paper). The BERT paper "
             "row is GLUE test-server figures with one metric per task (MRPC, QQP: F1; STS-B: Spearman), as the "
             "write-up lists them; its averages use that one figure."]
    if not_run:
        notes.append(f"Not run (the run was stopped at its deadline): {', '.join(not_run)}; a task's mean, std and "
                     "max are over the seeds it has (n=), and the averages over the seeds that have every task.")
    return "\n".join(lines + notes) + "\n"


def plot_table(table: dict, path: Path, model: str = "") -> None:
    from eval.plots import figure

    tasks = [t for t in table["tasks"] if t in table["mean"]["tasks"]]
    means = [table["mean"]["tasks"][t]["score"]["mean"] for t in tasks]
    stds = [table["mean"]["tasks"][t]["score"]["std"] for t in tasks]
    hf = next(iter(table["references"].values()))
    reference = [(hf["scores"][t] and task_score(t, hf["scores"][t])) or 0.0 for t in tasks]
    fig = figure(1.2 * len(tasks) + 3, 4)
    axes = fig.add_subplot(1, 1, 1)
    positions = list(range(len(tasks)))
    axes.bar([p - 0.2 for p in positions], means, 0.4, yerr=stds, capsize=3,
             label=f"{model or 'this model'} (mean ± std, {len(table['seeds'])} seeds)")
    axes.bar([p + 0.2 for p in positions], reference, 0.4, label=next(iter(table["references"])), alpha=0.6)
    axes.set_xticks(positions)
    axes.set_xticklabels([TASKS[t].folder for t in tasks])
    axes.set_ylabel("GLUE task score (%)")
    axes.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def write_table(evals: dict[tuple[str, int], list[Path]], out_dir: Path,
                not_run: list[tuple[str, int]] | None = None) -> None:
    """``glue.json``, ``glue.md`` and ``glue.png`` in ``out_dir`` (the JSON last but one, the Markdown last).

    ``not_run``: ``(task, seed)`` cells that were planned but not run; they are listed, and a task's
    rows are over the seeds it has.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = build_table(evals, [task for task, _ in not_run or []])
    model = _model_name(table)
    table["model"] = model
    table["not_run"] = [f"{task} seed {seed}" for task, seed in sorted(not_run or [])]
    plot_table(table, out_dir / "glue.png", model)
    write_json_atomic(out_dir / "glue.json", table)
    write_text_atomic(out_dir / TABLE, format_markdown(table, model, table["not_run"]))


def _model_name(table: dict) -> str:
    for record in table["runs"]:
        config = json.loads(RunFolder(record["run_dir"]).train_config.read_text()) if record["run_dir"] else {}
        if config.get("model_dir"):
            folder = Path(config["model_dir"])
            return folder.parent.name if folder.name == "model" else folder.name  # a package's model/ folder
    return ""


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m tasks.glue.table GLUE_JSON", file=sys.stderr)
        return 2
    table = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    print(format_markdown(table, table.get("model", ""), table.get("not_run")), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
