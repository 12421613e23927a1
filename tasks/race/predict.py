"""RACE predictions on new questions: RACE JSON Lines (or a split folder) whose articles have no ``answers``.

    python -m eval predict race --model runs/finetune-race-mc-<hash> --data new.jsonl --out runs/predict-race

Each article is ``{"id", "article", "questions", "options"}`` (four options per question). The
questions are encoded as the run's features were (its ``max_seq_length``) and scored by the
evaluation's own :func:`tasks.race.evaluate.race_probabilities`, so a file with its answers
removed gets exactly evaluation's ``answers.json``. Output: ``answers.json`` (question id ->
``{"answer": "A"-"D", "probabilities": [4]}``; a question prep skipped has ``"answer": null`` and
the uniform distribution, as in evaluation, and is reported).

The Python API takes ``{"article", "question", "options", "id"?}`` dicts (or whole articles with
``"questions"`` and ``"options"`` lists) and returns ``{"id", "answer", "probabilities"}`` per
question; a question's id is ``<article id>-<question index>``, as RACE's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from eval.inference import ordered_table
from tasks.race.evaluate import race_probabilities
from tasks.race.metrics import ANSWERS_FILE, UNIFORM, answer_record, write_answers
from tasks.race.prep import RacePrepConfig
from tasks.race.read import SPLITS, read_race
from tasks.spec import PredictContext, PredictOutcome


@dataclass(frozen=True)
class RacePredictOptions:
    split: str | None = field(default=None, metadata={
        "help": "with the release root folder RACE/ as input: which split folder to read", "choices": SPLITS})


def prep_config(train_config: dict, features_config: dict, options: RacePredictOptions | None) -> RacePrepConfig:
    """The run's ``max_seq_length`` (its features', else train_config.json's); every question of the input."""
    length = features_config.get("max_seq_length") or train_config.get("max_seq_length")
    split = options.split if options is not None else None
    return RacePrepConfig(split=split, **({"max_seq_length": length} if length else {}))


def predict(context: PredictContext) -> PredictOutcome:
    """The four options' probabilities and the answer of every question of the input."""
    split = (context.manifest.get("config") or {}).get("split")
    questions = read_race(context.data_path, split, labelled=False).gold
    skipped = context.skipped
    predicted: dict = {}
    if context.features.num_rows:
        table = ordered_table(context.features)
        probs = race_probabilities(context.model, table, context.config.batch_size, device=context.device,
                                   pad_id=context.pad_id, progress=context.progress)
        predicted = {qid: answer_record(p) for qid, p in zip(table.column("example_id").to_pylist(), probs)}
    answers = {q.question_id: predicted.get(q.question_id, {"answer": None, "probabilities": list(UNIFORM)})
               for q in questions}
    records = [{"id": qid, **record, **({"skipped": skipped[qid]} if qid in skipped else {})}
               for qid, record in answers.items()]

    def write_files(folder: Path) -> None:
        write_answers(folder / ANSWERS_FILE, answers)

    counts = {"questions": len(answers), "questions_predicted": len(predicted),
              "questions_skipped": len(answers) - len(predicted)}
    return PredictOutcome(records=records, write_files=write_files, counts=counts)


def _article(i: int, item) -> dict:
    if not isinstance(item, dict) or not isinstance(item.get("article"), str):
        raise ValueError(f"input {i}: expected {{\"article\", \"question\", \"options\"}} (or \"questions\" and a "
                         f"list of option lists), got {item!r}")
    if "questions" in item:
        questions, options = item["questions"], item.get("options")
    else:
        questions, options = [item.get("question")], [item.get("options")]
    return {"id": str(item.get("id", f"input{i}")), "article": item["article"], "questions": questions,
            "options": options}


def write_inputs(inputs: list, folder: Path, train_config: dict | None = None) -> tuple[Path, RacePredictOptions]:
    """Articles and their questions as RACE JSON Lines without answers (article ids ``input<i>`` by default)."""
    path = Path(folder) / "questions.jsonl"
    with open(path, "w", encoding="utf-8") as handle:
        for i, item in enumerate(inputs):
            handle.write(json.dumps(_article(i, item), ensure_ascii=False) + "\n")
    return path, RacePredictOptions()
