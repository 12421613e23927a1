"""SQuAD predictions on new questions: a SQuAD-format file whose questions have no ``answers``.

    python -m eval predict squad --model runs/finetune-squad-span-<hash> --data questions.json --out runs/predict-squad

The file is prepared as the run's eval features were (its ``max_seq_length``, ``doc_stride``,
``max_query_length``; the eval split, which keeps the offsets) and answered by the evaluation's
own :func:`tasks.squad.evaluate.answer_questions`, so a labelled file with its answers removed
gets exactly evaluation's ``predictions.json``. Outputs: ``predictions.json``, ``nbest.json``
(with each answer's character offsets), ``null_odds.json`` (SQuAD 2.0). SQuAD 2.0 decoding
(``--version-2-with-negative``) follows the flag, else the file's ``version``, else the run's
training data.

The Python API takes ``{"question", "context"}`` dicts (``"id"`` optional) and returns
``{"id", "answer", "score", "start", "end"}``: the answer text, its n-best probability and its
character offsets in the context (None for the no-answer ``""``).
"""

from __future__ import annotations

import json
from pathlib import Path

from eval.inference import ordered_table
from tasks.spec import PredictContext, PredictOutcome
from tasks.squad.evaluate import answer_questions, write_answer_files
from tasks.squad.prep import SquadPrepConfig
from tasks.squad.read import load_squad_data

# The prep settings that shape a window; the split and the article subset are prediction's own.
WINDOW_FIELDS = ("max_seq_length", "doc_stride", "max_query_length")


def prep_config(train_config: dict, features_config: dict, options=None) -> SquadPrepConfig:
    """The run's windows (its features' settings, else train_config.json's ``max_seq_length``) on the eval split."""
    recorded = dict(features_config) or {"max_seq_length": train_config.get("max_seq_length")}
    return SquadPrepConfig(**{name: recorded[name] for name in WINDOW_FIELDS if recorded.get(name) is not None},
                           split="eval")


def version_2(context: PredictContext, version: str | None) -> bool:
    """SQuAD 2.0 decoding: the flag, else the file's version, else what the run was trained on."""
    if context.config.version_2_with_negative is not None:
        return context.config.version_2_with_negative
    if version is not None:
        return str(version).lstrip("v").startswith("2")
    return bool((context.train_config.get("data_info") or {}).get("version_2_with_negative"))


def answer_record(qid: str, answer: str, nbest: list[dict], skipped: str | None) -> dict:
    """The API's answer: the text, its n-best probability and its character offsets in the context."""
    entry = next((e for e in nbest if e["text"] == answer), None)
    record = {"id": qid, "answer": answer, "score": entry["probability"] if entry else None,
              "start": entry["start"] if entry else None, "end": entry["end"] if entry else None}
    if skipped is not None:
        record["skipped"] = skipped
    return record


def predict(context: PredictContext) -> PredictOutcome:
    """Answer every question of the file (a question prep skipped gets "" and is reported)."""
    data = load_squad_data(context.data_path, labelled=False)
    skipped = context.skipped
    table = ordered_table(context.features) if context.features.num_rows else context.features
    without = [qid for qid in data.contexts if qid in skipped]
    v2 = version_2(context, data.version)
    predictions, null_odds, nbest, timing = answer_questions(
        context.model, table, data.contexts, without, context.config, v2, device=context.device,
        pad_id=context.pad_id, progress=context.progress)
    records = [answer_record(qid, predictions[qid], nbest[qid], skipped.get(qid)) for qid in data.contexts]

    def write_files(folder: Path) -> None:
        write_answer_files(folder, predictions, nbest, null_odds if v2 else None)

    counts = {"questions": len(data.contexts), "features": table.num_rows, "questions_skipped": len(without),
              "answered_empty": sum(1 for text in predictions.values() if not text),
              "version_2_with_negative": v2, **timing}
    return PredictOutcome(records=records, write_files=write_files, counts=counts)


def write_inputs(inputs: list, folder: Path, train_config: dict | None = None) -> tuple[Path, None]:
    """``[{"question", "context", "id"?}, ...]`` as a SQuAD file (one paragraph per question, ids ``q<i>`` by default)."""
    paragraphs = []
    for i, item in enumerate(inputs):
        if not isinstance(item, dict) or not isinstance(item.get("question"), str) \
                or not isinstance(item.get("context"), str):
            raise ValueError(f"input {i}: expected {{\"question\": str, \"context\": str}}, got {item!r}")
        qid = str(item.get("id", f"q{i}"))
        paragraphs.append({"context": item["context"], "qas": [{"id": qid, "question": item["question"]}]})
    path = Path(folder) / "questions.json"
    path.write_text(json.dumps({"data": [{"title": "inputs", "paragraphs": paragraphs}]}, ensure_ascii=False),
                    encoding="utf-8")
    return path, None
