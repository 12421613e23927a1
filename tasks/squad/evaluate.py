"""SQuAD evaluation: data file in, official-format predictions and official-script metrics out.

``evaluate_squad(model, features, data, cfg)`` is the model-in, results-out core (tested with a
tiny in-process model); :func:`evaluate` is what the evaluation engine (:mod:`eval.run`) calls:
it adds the data file, the files written and the report's plot data.

Outputs: ``predictions.json`` ({id: answer}, the official scripts' input; "" is the no-answer
spelling), ``nbest.json``, ``null_odds.json`` (v2: the official v2.0 script's
``--na-prob-file``). :func:`answer_questions` (logits -> n-best answers) is what predictions on new
questions (tasks/squad/predict.py) run too.
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

from eval.inference import length_batches, ordered_table, row_lengths, tracked
from prep.artifact import write_json_atomic
from tasks.spec import EvalContext, EvalOutcome
from tasks.squad.read import SquadData, load_squad_data
from tasks.squad.model import collate_squad
from tasks.squad.decode import decode_predictions
from tasks.squad.metrics import (
    evaluate_squad_predictions,
    find_all_best_thresh,
    iter_qas,
    make_qid_to_has_ans,
    raw_scores_v1,
    raw_scores_v2,
)


@dataclass(frozen=True)
class SquadEvalConfig:
    """How SQuAD answers are decoded and scored (the canonical run_squad / utils_qa names).

    ``version_2_with_negative=None`` follows the data: on when any question has
    ``is_impossible`` or the file says version 2.x.
    """

    n_best_size: int = field(default=20, metadata={"help": "span candidates kept per question"})
    max_answer_length: int = field(default=30, metadata={"help": "longest answer in tokens"})
    version_2_with_negative: bool | None = field(
        default=None, metadata={"help": "SQuAD 2.0 scoring with no-answer predictions (default: follow the data)"})
    null_score_diff_threshold: float = field(
        default=0.0, metadata={"help": "v2: answer \"\" when null score - best span score exceeds this"})
    max_context_only: bool = field(
        default=True, metadata={"help": "score a span start only in the window where it has most context"})
    batch_size: int = field(default=64, metadata={"help": "inference batch (speed only)"})

    def __post_init__(self):
        if self.n_best_size < 1:
            raise ValueError(f"n_best_size must be >= 1, got {self.n_best_size}")
        if self.max_answer_length < 1:
            raise ValueError(f"max_answer_length must be >= 1, got {self.max_answer_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def decode_kwargs(self, version_2_with_negative: bool) -> dict:
        """Keyword arguments of :func:`tasks.squad.decode.decode_example`."""
        return {
            "n_best_size": self.n_best_size,
            "max_answer_length": self.max_answer_length,
            "version_2_with_negative": version_2_with_negative,
            "null_score_diff_threshold": self.null_score_diff_threshold,
            "max_context_only": self.max_context_only,
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)



def _squad_outputs(output):
    if isinstance(output, (tuple, list)):
        return output[0], output[1]
    if hasattr(output, "start_logits"):
        return output.start_logits, output.end_logits
    raise TypeError(f"a SQuAD model must return (start_logits, end_logits), got {type(output).__name__}")


@torch.inference_mode()
def squad_logits(model, table: pa.Table, batch_size: int, device: str = "cpu", pad_id: int = 0, progress=None):
    """Per-feature ``(start_logits, end_logits)`` lists (float32, cut to each row's length)."""
    lengths = row_lengths(table)
    starts: list = [None] * len(lengths)
    ends: list = [None] * len(lengths)
    for rows in tracked(length_batches(lengths, batch_size), progress):
        batch = collate_squad(table.take(pa.array(rows)), pad_id=pad_id)
        start, end = _squad_outputs(model(
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            token_type_ids=batch["token_type_ids"].to(device),
        ))
        start = start.float().cpu().numpy()
        end = end.float().cpu().numpy()
        if start.shape[0] != len(rows) or end.shape != start.shape:
            raise ValueError(f"model returned logits {start.shape}/{end.shape} for a batch of {len(rows)}")
        for k, row in enumerate(rows):
            starts[row] = start[k, : lengths[row]].copy()
            ends[row] = end[k, : lengths[row]].copy()
    return starts, ends


def squad_offsets(table: pa.Table) -> list[np.ndarray]:
    """The ``offset_mapping`` column as one int array ``[T, 2]`` per feature (-1 where null)."""
    if "offset_mapping" not in table.column_names:
        raise ValueError("the SQuAD features have no offset_mapping: evaluate the eval split (prep --split eval)")
    column = table.column("offset_mapping")
    items = pc.list_flatten(column)
    valid = items.is_valid().to_numpy(zero_copy_only=False)
    pairs = np.full((len(valid), 2), -1, dtype=np.int64)
    pairs[valid] = pc.list_flatten(items).to_numpy(zero_copy_only=False).reshape(-1, 2)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.split(pairs, np.cumsum(lengths)[:-1])


def resolve_version_2(cfg: SquadEvalConfig, data: SquadData) -> bool:
    """``version_2_with_negative``: the config's value, else what the data says."""
    if cfg.version_2_with_negative is not None:
        return cfg.version_2_with_negative
    return data.has_impossible or str(data.version or "").lstrip("v").startswith("2")


@dataclass
class SquadResults:
    metrics: dict  # the official script's output for this data version
    predictions: dict  # question id -> answer text (predictions.json)
    null_odds: dict  # question id -> score_null - score_best_span (null_odds.json)
    nbest: dict  # question id -> n-best list (nbest.json)
    exact: dict  # question id -> per-question EM (0/1) under the version's rules
    f1: dict  # question id -> per-question F1 in [0, 1]
    version_2_with_negative: bool
    threshold_search: dict | None = None  # v2: best thresholds over every question's best span
    counts: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)


def evaluate_squad(model, features: pa.Table, data: SquadData, cfg: SquadEvalConfig, *, device: str = "cpu",
                   pad_id: int = 0, skipped_ids: tuple[str, ...] = ()) -> SquadResults:
    """Run ``model`` on the eval features, decode answers, score them with the official rules.

    ``skipped_ids`` are questions prep left out (listed in its manifest); they are answered ""
    so that the figures keep the official denominator. Any other question without features, or
    a feature whose question is not in ``data``, is an error.
    """
    table = ordered_table(features)
    feature_example_ids = table.column("example_id").to_pylist()
    covered = set(feature_example_ids)
    unknown = sorted(covered - set(data.contexts))
    if unknown:
        raise ValueError(f"{len(unknown)} feature example ids are not questions of the data (e.g. {unknown[:3]})")
    skipped = [qid for qid in data.contexts if qid not in covered]
    skipped_by_prep = set(skipped_ids)
    unexplained = [qid for qid in skipped if qid not in skipped_by_prep]
    if unexplained:
        raise ValueError(
            f"{len(unexplained)} questions of the data have no features and were not skipped by prep "
            f"(e.g. {unexplained[:3]}); the features were built from other data"
        )
    version_2 = resolve_version_2(cfg, data)
    if not version_2 and data.has_impossible:
        raise ValueError("the data has unanswerable questions (SQuAD 2.0); drop --no-version-2-with-negative")

    predictions, null_odds, nbest, timing = answer_questions(model, table, data.contexts, skipped, cfg, version_2,
                                                             device=device, pad_id=pad_id)
    metrics = evaluate_squad_predictions(
        data.dataset, predictions, version_2_with_negative=version_2,
        na_probs=null_odds if version_2 else None, null_score_diff_threshold=cfg.null_score_diff_threshold,
    )
    exact, f1 = (raw_scores_v2 if version_2 else raw_scores_v1)(data.dataset, predictions)
    threshold_search = search_null_threshold(data, nbest, null_odds) if version_2 else None
    num_features = table.num_rows
    return SquadResults(
        metrics=metrics, predictions=predictions, null_odds=null_odds, nbest=nbest, exact=exact, f1=f1,
        version_2_with_negative=version_2, threshold_search=threshold_search,
        counts={"questions": len(data.contexts), "features": num_features, "questions_without_features": len(skipped),
                "questions_answered_empty": sum(1 for text in predictions.values() if not text)},
        timing=timing,
    )


def answer_questions(model, table: pa.Table, contexts: dict, skipped, cfg: SquadEvalConfig, version_2: bool, *,
                     device: str = "cpu", pad_id: int = 0, progress=None) -> tuple[dict, dict, dict, dict]:
    """``(predictions, null_odds, nbest, timing)`` for every question of ``contexts`` (id -> context, data order).

    ``table``: the features in feature-id order (may be empty); the questions in ``skipped`` have
    none and are answered "" with an empty n-best list.
    """
    started = time.perf_counter()
    start_logits, end_logits = ((), ()) if table.num_rows == 0 else squad_logits(
        model, table, cfg.batch_size, device=device, pad_id=pad_id, progress=progress)
    inference_s = time.perf_counter() - started
    started = time.perf_counter()
    predictions, null_odds, nbest = decode_predictions(
        table.column("example_id").to_pylist(), contexts, start_logits, end_logits,
        squad_offsets(table) if table.num_rows else (), **cfg.decode_kwargs(version_2),
    )
    for qid in skipped:
        predictions[qid] = ""
        null_odds[qid] = 0.0  # any value scores a "" answer the same in the official script
        nbest[qid] = []
    # Data order, as the official scripts iterate.
    predictions = {qid: predictions[qid] for qid in contexts}
    null_odds = {qid: null_odds[qid] for qid in contexts if qid in null_odds}
    nbest = {qid: nbest[qid] for qid in contexts}
    timing = {"inference_seconds": inference_s, "decode_seconds": time.perf_counter() - started,
              "features_per_second": table.num_rows / inference_s if inference_s > 0 else None}
    return predictions, null_odds, nbest, timing


def search_null_threshold(data: SquadData, nbest: dict, null_odds: dict) -> dict:
    """The official best-threshold search run on every question's best non-null span.

    The official figures (``best_f1_thresh`` in the metrics) search over ``predictions.json``,
    where questions already answered "" at the decode threshold show no span, so thresholds
    above it cannot gain anything. Searching over the best spans instead (what
    ``predictions.json`` would hold at an infinite threshold) sees the whole range; decoding
    again at the ``best_f1_thresh`` found here gives exactly ``best_f1``.
    """
    spans = {}
    for qid in data.contexts:
        spans[qid] = next((entry["text"] for entry in nbest.get(qid, []) if entry["text"]), "")
    exact, f1 = raw_scores_v2(data.dataset, spans)
    found: dict = {}
    find_all_best_thresh(found, spans, exact, f1, null_odds, make_qid_to_has_ans(data.dataset))
    return found


def question_type(question: str) -> str:
    """The question's wh-word (what, who, when, ...) or "other", for the per-type breakdown."""
    words = question.lower().replace("?", " ").split()
    for word in words:
        if word in ("what", "which", "who", "whom", "whose", "when", "where", "why", "how"):
            return "who" if word in ("whom", "whose") else word
    return "other"


def breakdown_by_question_type(data: SquadData, exact: dict, f1: dict) -> list[dict]:
    """EM / F1 (percent) per question type, largest group first."""
    groups: dict[str, list[str]] = {}
    for qa in iter_qas(data.dataset):
        groups.setdefault(question_type(qa["question"]), []).append(qa["id"])
    rows = []
    for name, qids in groups.items():
        rows.append({
            "type": name,
            "count": len(qids),
            "exact": 100.0 * sum(exact[q] for q in qids) / len(qids),
            "f1": 100.0 * sum(f1[q] for q in qids) / len(qids),
        })
    return sorted(rows, key=lambda row: (-row["count"], row["type"]))


def evaluate(context: EvalContext) -> EvalOutcome:
    """The evaluation engine's entry: score the run on ``context.data_path``, list the files to write."""
    cfg = context.config
    manifest = context.manifest
    # Features built from the first N articles (prep --max-articles) are scored on those articles.
    articles_used = manifest["input"].get("articles_used")
    subset = articles_used if articles_used != manifest["input"].get("articles_in_file") else None
    data = load_squad_data(context.data_path, max_articles=subset)
    results = evaluate_squad(context.model, context.features, data, cfg, device=context.device,
                             pad_id=context.pad_id, skipped_ids=context.skipped_ids)
    summary = {
        "metrics": results.metrics,
        "breakdown_by_question_type": breakdown_by_question_type(data, results.exact, results.f1),
        "counts": results.counts,
        "timing": results.timing,
    }
    if results.threshold_search is not None:
        summary["threshold_search_over_spans"] = results.threshold_search
    plot_data = {"null_odds": null_odds_split(data, results.null_odds)} if results.version_2_with_negative else None

    def write_files(folder: Path) -> None:
        write_answer_files(folder, results.predictions, results.nbest,
                           results.null_odds if results.version_2_with_negative else None)

    config = {"version_2_with_negative": results.version_2_with_negative, "articles_scored": len(data.dataset),
              "articles_in_file": manifest["input"].get("articles_in_file")}
    return EvalOutcome(summary=summary, write_files=write_files, config=config, plot_data=plot_data)


PREDICTIONS_FILE = "predictions.json"
NBEST_FILE = "nbest.json"
NULL_ODDS_FILE = "null_odds.json"


def write_answer_files(folder: Path, predictions: dict, nbest: dict, null_odds: dict | None) -> None:
    """``predictions.json``, ``nbest.json`` and (v2: ``null_odds`` given) ``null_odds.json`` in ``folder``."""
    write_json_atomic(folder / PREDICTIONS_FILE, predictions)
    write_json_atomic(folder / NBEST_FILE, nbest)
    if null_odds is not None:
        write_json_atomic(folder / NULL_ODDS_FILE, null_odds)


def null_odds_split(data: SquadData, null_odds: dict) -> dict:
    """null-odds of answerable and unanswerable questions (the report's histogram)."""
    has_ans = make_qid_to_has_ans(data.dataset)
    return {
        "has_answer": [null_odds[q] for q, v in has_ans.items() if v and q in null_odds],
        "no_answer": [null_odds[q] for q, v in has_ans.items() if not v and q in null_odds],
    }
