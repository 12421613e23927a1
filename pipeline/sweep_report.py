"""A sweep's report (no Luigi here): trials table sorted by objective, best settings, PNG plots.

:func:`write_report` writes into one folder ``report.md``, ``trials.csv``, ``sweep.json`` (best
trial, baseline, importances, every trial) and, through optuna's matplotlib visualisation,
``history.png`` (optimisation history) and ``importances.png`` (fANOVA parameter importances,
once two trials have completed), and returns the ``sweep.json`` record.
"""

from __future__ import annotations

import csv
import io
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from prep.artifact import write_json_atomic, write_text_atomic

# The report folder's files the sweep task reads (optuna is imported where it is used, so the
# sweep task names these without loading it).
REPORT = "report.md"
SWEEP_JSON = "sweep.json"

if TYPE_CHECKING:
    import optuna


def dashboard_command(storage_url: str) -> str:
    return f"optuna-dashboard {storage_url}"


def sort_trials(records: list[dict], direction: str) -> list[dict]:
    """Complete trials best first, then pruned ones (by their last reported value), then the rest."""
    sign = 1.0 if direction == "minimize" else -1.0

    def key(record):
        state = {"COMPLETE": 0, "PRUNED": 1}.get(record["state"], 2)
        value = record.get("value") if state == 0 else record.get("last_intermediate")
        return state, sign * value if isinstance(value, (int, float)) and math.isfinite(value) else math.inf

    return sorted(records, key=key)


def _study_view(study: optuna.Study, numbers: list[int], direction: str) -> optuna.Study:
    """An in-memory study holding just these trials (the plots show this sweep's trials only), in the
    study's order: ``add_trials`` numbers them as they come, and ``numbers`` is in slot order."""
    import optuna

    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    view = optuna.create_study(direction=direction)
    view.add_trials([by_number[n] for n in sorted(numbers) if n in by_number])
    return view


def _plots(view: optuna.Study, out_dir: Path) -> tuple[dict, list[str]]:
    """history.png and importances.png; returns (importances, notes on what could not be drawn)."""
    import matplotlib
    import optuna

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    notes, importances = [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="No artists with labels")  # a history with one trial
        axes = plot_optimization_history(view)
        axes.figure.savefig(out_dir / "history.png", dpi=110, bbox_inches="tight")
        plt.close(axes.figure)
        complete = [t for t in view.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if len(complete) < 2:
            notes.append("parameter importances need at least 2 complete trials")
            return importances, notes
        try:
            importances = get_param_importances(view, evaluator=FanovaImportanceEvaluator(seed=0))
            axes = plot_param_importances(view, evaluator=FanovaImportanceEvaluator(seed=0))
            axes.figure.savefig(out_dir / "importances.png", dpi=110, bbox_inches="tight")
            plt.close(axes.figure)
        except (RuntimeError, ValueError) as err:  # e.g. every trial with the same settings
            notes.append(f"parameter importances not computed: {err}")
    return {name: float(value) for name, value in importances.items()}, notes


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _table(records: list[dict], names: list[str], headline_keys: list[str]) -> list[str]:
    header = ["rank", "trial", "state", "objective", *names, "epochs reported", *headline_keys, "fine-tune"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for rank, record in enumerate(records, 1):
        objective = record.get("value") if record["state"] == "COMPLETE" else record.get("last_intermediate")
        cells = [str(rank), str(record["trial_number"]) + (" (baseline)" if record.get("baseline") else ""),
                 record["state"].lower(), _fmt(objective), *(_fmt(record["params"].get(n)) for n in names),
                 str(len(record.get("intermediate") or {})),
                 *(_fmt((record.get("headline") or {}).get(k)) for k in headline_keys),
                 f"`{Path(record['run_dir']).name}`" if record.get("run_dir") else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _csv(records: list[dict], names: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["trial", "state", "value", "last_intermediate", *names, "run_dir", "eval_dir"])
    for r in records:
        writer.writerow([r["trial_number"], r["state"], r.get("value"), r.get("last_intermediate"),
                         *(r["params"].get(n) for n in names), r.get("run_dir"), r.get("eval_dir")])
    return buffer.getvalue()


def write_report(study: optuna.Study, records: list[dict], out_dir: str | Path, *, task: str, metric: str,
                 direction: str, storage_url: str, space: dict) -> dict:
    """The sweep report of ``records`` (one per slot: the slot tasks' JSON) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ranked = sort_trials(records, direction)
    complete = [r for r in ranked if r["state"] == "COMPLETE"]
    best = complete[0] if complete else None
    baseline = next((r for r in records if r.get("baseline")), None)
    view = _study_view(study, [r["trial_number"] for r in records], direction)
    importances, notes = _plots(view, out_dir)
    names = list(space)
    headline_keys = sorted({k for r in records for k in (r.get("headline") or {})})
    counts = {state: sum(r["state"] == state for r in records) for state in ("COMPLETE", "PRUNED")}
    summary = {
        "task": task, "study": study.study_name, "storage": storage_url, "metric": metric, "direction": direction,
        "space": space, "trials": len(records), "complete": counts["COMPLETE"], "pruned": counts["PRUNED"],
        "best": best, "baseline": baseline, "importances": importances, "dashboard": dashboard_command(storage_url),
        "ranked": ranked,
    }
    lines = [
        f"# Sweep: {task}, {len(records)} trials ({counts['COMPLETE']} complete, {counts['PRUNED']} pruned)", "",
        f"Objective: **{metric}** on the validation split, {direction}d. Study `{study.study_name}` in "
        f"`{storage_url}`; browse it with `{dashboard_command(storage_url)}`.", "",
    ]
    if best is not None:
        lines += [f"**Best**: trial {best['trial_number']}, {metric} {best['value']:.4f}, settings "
                  + ", ".join(f"`{k}={_fmt(v)}`" for k, v in best["params"].items())
                  + f"; fine-tune `{best['run_dir']}`, evaluation `{best['eval_dir']}`.", ""]
    if baseline is not None and baseline["state"] == "COMPLETE":
        lines += [f"Baseline (trial {baseline['trial_number']}, the configured recipe): {metric} "
                  f"{baseline['value']:.4f}.", ""]
    lines += ["## Trials, best first", "", *_table(ranked, names, headline_keys), "",
              "Pruned trials are ranked by the last value they reported (the trainer's per-epoch held-out figure).",
              "", "## Optimisation history", "", "![optimisation history](history.png)", ""]
    if importances:
        lines += ["## Parameter importances (fANOVA)", "", "![parameter importances](importances.png)", "",
                  "| setting | importance |", "|---|---|", *(f"| {k} | {v:.3f} |" for k, v in importances.items()), ""]
    lines += [f"_{note}._" for note in notes]
    write_text_atomic(out_dir / "trials.csv", _csv(ranked, names))
    write_json_atomic(out_dir / SWEEP_JSON, summary)
    write_text_atomic(out_dir / REPORT, "\n".join(lines) + "\n")
    return summary
