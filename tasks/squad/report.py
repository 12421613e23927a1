"""SQuAD's part of report.md, compare tables and run summaries: metric rows, sections, plots."""

from __future__ import annotations

from pathlib import Path

from eval.plots import figure

QTYPE_PNG = "squad_by_question_type.png"
NULL_ODDS_PNG = "null_odds.png"
# Published reference points (SQuAD 1.1 dev).
ANCHORS = {
    "EM": (80.8, "BERT-base, SQuAD 1.1 dev (Devlin et al., 2019, Table 2)"),
    "F1": (88.5, "BERT-base, SQuAD 1.1 dev (Devlin et al., 2019, Table 2)"),
}


def metric_rows(summary: dict) -> list[tuple]:
    """(name, value, format, (anchor, source) or None) for the report's metrics table."""
    metrics = summary["metrics"]
    if "exact_match" in metrics:  # v1.1
        return [("EM", metrics["exact_match"], ".2f", ANCHORS["EM"]), ("F1", metrics["f1"], ".2f", ANCHORS["F1"])]
    rows = [("EM", metrics["exact"], ".2f", None), ("F1", metrics["f1"], ".2f", None)]
    for prefix in ("HasAns", "NoAns"):
        if f"{prefix}_exact" in metrics:
            rows += [(f"{prefix} EM", metrics[f"{prefix}_exact"], ".2f", None),
                     (f"{prefix} F1", metrics[f"{prefix}_f1"], ".2f", None)]
    for key, name in (("best_exact", "best EM"), ("best_exact_thresh", "best EM threshold"),
                      ("best_f1", "best F1"), ("best_f1_thresh", "best F1 threshold")):
        if key in metrics:
            rows.append((name, metrics[key], ".4f" if "thresh" in key else ".2f", None))
    return rows


def headline(metrics: dict) -> dict:
    """The figures a comparison or run summary shows, by label."""
    if "exact_match" in metrics:
        return {"EM": metrics["exact_match"], "F1": metrics["f1"]}
    return {"EM": metrics["exact"], "F1": metrics["f1"], "HasAns F1": metrics.get("HasAns_f1"),
            "NoAns F1": metrics.get("NoAns_f1"), "best F1": metrics.get("best_f1"),
            "best F1 thresh": metrics.get("best_f1_thresh")}


AGGREGATE_METRICS = ("exact_match", "exact", "f1", "HasAns_f1", "NoAns_f1", "best_f1", "best_f1_thresh")
METRIC_LABELS = {"exact_match": "EM", "exact": "EM", "f1": "F1", "HasAns_f1": "HasAns F1", "NoAns_f1": "NoAns F1",
                 "best_f1": "best F1", "best_f1_thresh": "best thresh"}


def report_sections(summary: dict, out_dir: Path, plot_data: dict | None, written: list) -> list[str]:
    """report.md's SQuAD sections: how it was scored, EM/F1 by question type, v2 no-answer decisions."""
    metrics = summary["metrics"]
    config = summary.get("config") or {}
    lines = []
    if "exact_match" in metrics:
        lines.append("Scored with the rules of the official `evaluate-v1.1.py` (identical figures on `predictions.json`).")
    else:
        lines.append(
            "Scored with the rules of the official `evaluate-v2.0.py` on `predictions.json` with "
            f"`--na-prob-file null_odds.json --na-prob-thresh {config.get('null_score_diff_threshold', 0.0):g}`."
        )
        search = summary.get("threshold_search_over_spans")
        if search:
            lines.append(
                f"Searched over every question's best span (not only the answers given at this threshold), "
                f"the best threshold is {search['best_f1_thresh']:.4f} for F1 {search['best_f1']:.2f} "
                f"({search['best_exact_thresh']:.4f} for EM {search['best_exact']:.2f}); decode again with "
                f"`--null-score-diff-threshold {search['best_f1_thresh']:.4f}` to get it."
            )
    lines.append("")
    breakdown = summary.get("breakdown_by_question_type") or []
    if breakdown:
        plot_question_types(breakdown, out_dir / QTYPE_PNG)
        written.append(out_dir / QTYPE_PNG)
        lines += ["## By question type", "", f"![by question type]({QTYPE_PNG})", "",
                  "| Type | Questions | EM | F1 |", "|---|---:|---:|---:|"]
        lines += [f"| {r['type']} | {r['count']} | {r['exact']:.2f} | {r['f1']:.2f} |" for r in breakdown]
        lines.append("")
    if plot_data and plot_data.get("null_odds"):
        search = summary.get("threshold_search_over_spans") or metrics
        plot_null_odds(plot_data["null_odds"], config.get("null_score_diff_threshold", 0.0),
                       search.get("best_f1_thresh"), out_dir / NULL_ODDS_PNG)
        written.append(out_dir / NULL_ODDS_PNG)
        lines += ["## No-answer decisions", "", f"![null odds]({NULL_ODDS_PNG})", ""]
    return lines



def plot_question_types(breakdown: list[dict], path: Path) -> None:
    fig = figure(7, 3.4)
    axes = fig.add_subplot(1, 1, 1)
    names = [row["type"] for row in breakdown]
    positions = range(len(names))
    axes.bar([p - 0.2 for p in positions], [row["exact"] for row in breakdown], 0.4, label="EM")
    axes.bar([p + 0.2 for p in positions], [row["f1"] for row in breakdown], 0.4, label="F1")
    axes.set_xticks(list(positions), [f"{row['type']}\n({row['count']})" for row in breakdown])
    axes.set_ylim(0, 100)
    axes.legend(fontsize=8)
    axes.set_title("SQuAD by question type")
    fig.tight_layout()
    fig.savefig(path)



def plot_null_odds(null_odds: dict, threshold: float, best_threshold: float | None, path: Path) -> None:
    fig = figure(6, 3.4)
    axes = fig.add_subplot(1, 1, 1)
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
    fig.tight_layout()
    fig.savefig(path)
