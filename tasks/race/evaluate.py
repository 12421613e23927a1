"""RACE evaluation: the model's four probabilities per question, accuracy on middle / high / all, answers.json.

    python -m eval race --model runs/race-mc --features runs/race-dev --data ../shared/data/race/dev.jsonl --out runs/eval-race

``evaluate_race(model, features, gold, cfg)`` is the model-in, results-out core; :func:`evaluate`
is what the evaluation engine (:mod:`eval.run`) calls. The gold answers are read from ``--data``
(a JSON Lines file or a split folder) as prep read it: the same split and question subset,
from the features' manifest. ``answers.json`` maps each question id to its predicted letter and
the four option probabilities (the write-up's "inference & answer saving"); a question prep
skipped has ``"answer": null`` and counts as wrong.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from eval.inference import classifier_logits, length_batches, ordered_table, tracked
from tasks.race.metrics import ANSWERS_FILE, UNIFORM, answer_record, score_answers, write_answers
from tasks.race.model import NUM_CHOICES, SPAN_KEYS, collate_race
from tasks.race.read import GoldQuestion, read_race
from tasks.spec import EvalContext, EvalOutcome


@dataclass(frozen=True)
class RaceEvalConfig:
    batch_size: int = field(default=16, metadata={"help": "questions per inference batch (speed only)"})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def question_lengths(table: pa.Table) -> np.ndarray:
    """The longest of each row's four sequences, for batching rows of similar length."""
    column = table.column("input_ids").combine_chunks()
    lengths = pc.list_value_length(column.flatten()).to_numpy(zero_copy_only=False)
    return lengths.reshape(len(table), -1).max(axis=1)


@torch.inference_mode()
def race_probabilities(model, table: pa.Table, batch_size: int, device: str = "cpu", pad_id: int = 0,
                       progress=None) -> np.ndarray:
    """Per-row softmax over the four options ``[N, 4]``, float64."""
    probs = np.zeros((table.num_rows, NUM_CHOICES), dtype=np.float64)
    for rows in tracked(length_batches(question_lengths(table), batch_size), progress):
        batch = collate_race(table.take(pa.array(rows)), pad_id=pad_id)
        inputs = {name: batch[name].to(device) for name in ("token_type_ids", *SPAN_KEYS) if name in batch}
        logits = classifier_logits(model(batch["input_ids"].to(device), batch["attention_mask"].to(device),
                                         **inputs), "a RACE model")
        if tuple(logits.shape) != (len(rows), NUM_CHOICES):
            raise ValueError(f"model returned logits {tuple(logits.shape)} for {len(rows)} questions; expected [B, 4]")
        probs[rows] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
    return probs


def gold_for(data_path: Path, manifest: dict) -> list[GoldQuestion]:
    """The gold answers of the questions prep read: same split folder and question subset as its manifest."""
    config = manifest.get("config") or {}
    return read_race(data_path, config.get("split"), config.get("max_questions") or None,
                     config.get("every_nth") or 1).gold


def evaluate_race(model, features: pa.Table, gold: list[GoldQuestion], cfg: RaceEvalConfig, *, device: str = "cpu",
                  pad_id: int = 0, skipped_ids: tuple[str, ...] = ()) -> tuple[dict, dict[str, dict]]:
    """``(summary, answers)``: metrics and counts, and the answers.json mapping (gold order)."""
    table = ordered_table(features)
    ids = table.column("example_id").to_pylist()
    gold_ids = {g.question_id for g in gold}
    unknown = sorted(set(ids) - gold_ids)
    if unknown:
        raise ValueError(f"{len(unknown)} feature questions are not in the data (e.g. {unknown[:3]}); "
                         "the features were built from another file")
    unexplained = sorted(gold_ids - set(ids) - set(skipped_ids))
    if unexplained:
        raise ValueError(f"{len(unexplained)} questions have no features and were not skipped by prep "
                         f"(e.g. {unexplained[:3]}); the features were built from another file")
    started = time.perf_counter()
    probs = race_probabilities(model, table, cfg.batch_size, device=device, pad_id=pad_id)
    seconds = time.perf_counter() - started
    predicted = {qid: answer_record(p) for qid, p in zip(ids, probs)}
    answers = {g.question_id: predicted.get(g.question_id, {"answer": None, "probabilities": list(UNIFORM)})
               for g in gold}
    scored = score_answers(gold, answers)
    summary = {**scored, "timing": {"inference_seconds": seconds,
                                    "questions_per_second": len(ids) / seconds if seconds > 0 else None}}
    summary["counts"]["features"] = table.num_rows
    return summary, answers


def evaluate(context: EvalContext) -> EvalOutcome:
    gold = gold_for(context.data_path, context.manifest)
    summary, answers = evaluate_race(context.model, context.features, gold, context.config, device=context.device,
                                     pad_id=context.pad_id, skipped_ids=context.skipped_ids)

    def write_files(folder: Path) -> None:
        write_answers(folder / ANSWERS_FILE, answers)

    return EvalOutcome(summary=summary, write_files=write_files)
