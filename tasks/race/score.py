"""Re-score RACE answers without a model, and score several runs together (ensembles of checkpoints or seeds).

    python -m eval score-race --data ../shared/data/race/dev.jsonl --predictions runs/eval-race/answers.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from tasks.race.evaluate import gold_for
from tasks.race.metrics import ANSWERS_FILE, answer_record, read_answers, score_answers
from tasks.race.read import SPLITS, read_race
from tasks.race.report import AGGREGATE_METRICS


def add_score_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--split", choices=SPLITS, default=None, help="with the release root as --data: the split")
    parser.add_argument("--max-questions", type=int, default=None, help="score the data's first N questions only")
    parser.add_argument("--every-nth", type=int, default=1, help="score every Nth question only (as prep's subset)")


def score_file(args: argparse.Namespace) -> dict:
    gold = read_race(args.data, args.split, args.max_questions, args.every_nth).gold
    return score_answers(gold, read_answers(args.predictions))["metrics"]


def average_answers(runs: list[dict[str, dict]]) -> dict[str, dict]:
    """The runs' probabilities averaged per question; a question some runs left unanswered is an error."""
    ids = list(runs[0])
    if any(set(run) != set(ids) for run in runs):
        raise ValueError("an ensemble needs runs that answered the same questions")
    averaged = {}
    for qid in ids:
        answered = [run[qid]["answer"] is not None for run in runs]
        if any(answered) and not all(answered):
            raise ValueError(f"{qid}: answered by some runs and not others; the runs read different features")
        if not any(answered):
            averaged[qid] = runs[0][qid]
            continue
        averaged[qid] = answer_record(np.mean([run[qid]["probabilities"] for run in runs], axis=0))
    return averaged


def ensemble(run_dirs: list[Path], summaries: list[dict]) -> dict:
    """Scores of the runs' answers.json probabilities averaged per question (same data, split and subset)."""
    inputs = [s.get("inputs") or {} for s in summaries]
    if len({(i.get("data") or {}).get("sha256") for i in inputs}) != 1:
        raise ValueError("an ensemble needs runs scored on the same data file")
    configs = [i.get("features_config") or {} for i in inputs]
    if any(config != configs[0] for config in configs):
        raise ValueError("an ensemble needs runs scored on features of the same split and question subset")
    gold = gold_for(Path(inputs[0]["data"]["path"]), {"config": configs[0]})
    metrics = score_answers(gold, average_answers([read_answers(Path(d) / ANSWERS_FILE) for d in run_dirs]))["metrics"]
    return {key: metrics[key] for key in AGGREGATE_METRICS if key in metrics}
