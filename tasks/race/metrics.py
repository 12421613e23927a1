"""RACE scores from answers: accuracy on middle, high and all, and the log loss of the probabilities.

Pure functions of ``{question id: (letter or None, four probabilities)}`` and the gold answers,
used by the evaluation, by ``score-race`` and by ensembles alike. A question with no prediction
(prep skipped it) counts as wrong, with the uniform distribution in the log loss.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from prep.artifact import write_json_atomic
from tasks.race.read import LETTERS, GoldQuestion

ANSWERS_FILE = "answers.json"
UNIFORM = (0.25, 0.25, 0.25, 0.25)


def answer_record(probabilities) -> dict:
    probabilities = [float(p) for p in probabilities]
    return {"answer": LETTERS[int(np.argmax(probabilities))], "probabilities": probabilities}


def score_answers(gold: list[GoldQuestion], answers: dict[str, dict]) -> dict:
    """``metrics`` (accuracy overall and per level, in %, log loss) and ``counts`` per level."""
    unknown = sorted(set(answers) - {g.question_id for g in gold})
    if unknown:
        raise ValueError(f"{len(unknown)} answered questions are not in the data (e.g. {unknown[:3]})")
    correct: dict[str, int] = {}
    total: dict[str, int] = {}
    missing = 0
    nll = 0.0
    for question in gold:
        record = answers.get(question.question_id) or {}
        letter = record.get("answer")
        probabilities = record.get("probabilities") or UNIFORM
        missing += letter is None
        hit = int(letter == LETTERS[question.label])
        for level in ("all", question.level):
            correct[level] = correct.get(level, 0) + hit
            total[level] = total.get(level, 0) + 1
        nll -= float(np.log(np.clip(probabilities[question.label], 1e-15, 1.0)))
    if not gold:
        raise ValueError("no gold questions to score")
    metrics = {"accuracy": 100.0 * correct["all"] / total["all"], "log_loss": nll / total["all"]}
    for level in sorted(set(total) - {"all"}):
        metrics[f"accuracy_{level}"] = 100.0 * correct[level] / total[level]
    counts = {"questions": total["all"], "unanswered": missing,
              **{f"questions_{level}": n for level, n in sorted(total.items()) if level != "all"}}
    return {"metrics": metrics, "counts": counts}


def write_answers(path: Path, answers: dict[str, dict]) -> None:
    write_json_atomic(path, answers)


def read_answers(path: str | Path) -> dict[str, dict]:
    """An ``answers.json`` checked for shape: ``{id: {"answer": "A"-"D" or null, "probabilities": [4 floats]}}``."""
    path = Path(path)
    try:
        answers = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: invalid JSON: {err.msg} at line {err.lineno}") from None
    if not isinstance(answers, dict):
        raise ValueError(f"{path}: expected a JSON object of question id -> answer")
    for qid, record in answers.items():
        if (not isinstance(record, dict) or record.get("answer") not in (*LETTERS, None)
                or len(record.get("probabilities") or ()) != 4):
            raise ValueError(f"{path}: {qid}: expected {{\"answer\": \"A\"-\"D\", \"probabilities\": [4 numbers]}}")
    return answers
