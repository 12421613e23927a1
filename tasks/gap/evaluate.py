"""GAP evaluation: gold TSV in, Kaggle and GAP-benchmark outputs and scores out.

``evaluate_gap(model, features, gold, cfg)`` is the model-in, results-out core; :func:`evaluate`
is what the evaluation engine (:mod:`eval.run`) calls. Outputs: ``submission.csv`` (Kaggle:
ID,A,B,NEITHER) and ``gap_predictions.tsv`` (the GAP scorer's headerless ID / A-coref /
B-coref).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch

from eval.inference import classifier_logits, length_batches, ordered_table, row_lengths, tracked
from tasks.gap.formats import read_gap_gold, write_submission_csv, write_system_tsv
from tasks.gap.metrics import GapGold, coref_decisions, predicted_labels, score_gap
from tasks.gap.model import collate_gap
from tasks.spec import EvalContext, EvalOutcome

MODEL_INPUTS = ("segment_ids", "p_start", "p_end", "a_start", "a_end", "b_start", "b_end")

UNIFORM = np.full(3, 1.0 / 3.0)
SUBMISSION_FILE = "submission.csv"
SYSTEM_FILE = "gap_predictions.tsv"


@dataclass(frozen=True)
class GapEvalConfig:
    """GAP scoring has no decoding knobs; only the inference batch size."""

    batch_size: int = field(default=64, metadata={"help": "inference batch (speed only)"})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@torch.inference_mode()
def gap_probabilities(model, table: pa.Table, batch_size: int, device: str = "cpu", pad_id: int = 0,
                      progress=None) -> np.ndarray:
    """Per-feature softmax probabilities ``[N, 3]`` (A, B, NEITHER), float64."""
    lengths = row_lengths(table)
    probs = np.zeros((len(lengths), 3), dtype=np.float64)
    for rows in tracked(length_batches(lengths, batch_size), progress):
        batch = collate_gap(table.take(pa.array(rows)), pad_id=pad_id)
        logits = classifier_logits(model(
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            token_type_ids=None,
            **{name: batch[name].to(device) for name in MODEL_INPUTS},
        ), "a GAP model")
        if tuple(logits.shape) != (len(rows), 3):
            raise ValueError(f"model returned logits {tuple(logits.shape)} for a batch of {len(rows)}; expected [B, 3]")
        probs[rows] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
    return probs




@dataclass
class GapResults:
    metrics: dict  # log_loss, accuracy, f1_overall / masculine / feminine, bias_f_over_m, ...
    scorecard: dict  # the GAP scorer's precision / recall / F1 and TP/FP/FN/TN by gender
    confusion_matrix: dict  # {"labels": [A, B, NEITHER], "matrix": [[gold x predicted]]}
    example_ids: list  # gold order
    probabilities: np.ndarray  # [N, 3], gold order (submission.csv)
    decisions: list  # (A-coref, B-coref) per example, gold order (the benchmark TSV)
    counts: dict = field(default_factory=dict)
    timing: dict = field(default_factory=dict)


def example_probabilities(feature_example_ids: list[str], feature_probs: np.ndarray) -> dict[str, np.ndarray]:
    """One distribution per example: the mean over its features (prep makes one window per row)."""
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}
    for example_id, probs in zip(feature_example_ids, feature_probs, strict=True):
        sums[example_id] = sums.get(example_id, 0.0) + probs
        counts[example_id] = counts.get(example_id, 0) + 1
    return {example_id: sums[example_id] / counts[example_id] for example_id in sums}


def score_probabilities(gold: list[GapGold], probs: np.ndarray) -> tuple[dict, list]:
    """All GAP scores plus the (A-coref, B-coref) decisions for probabilities in gold order."""
    scored = score_gap(gold, probs)
    return scored, coref_decisions(predicted_labels(probs))


def evaluate_gap(model, features: pa.Table, gold: list[GapGold], cfg: GapEvalConfig, *, device: str = "cpu",
                 pad_id: int = 0, skipped_ids: tuple[str, ...] = ()) -> GapResults:
    """Run ``model`` on the GAP features and score it against ``gold`` (rows of the gold TSV).

    Rows prep skipped (listed in its manifest) get the uniform distribution and no coreference
    claim, so the scores keep every gold row; any other gold row without features, or a feature
    of an id not in ``gold``, is an error.
    """
    table = ordered_table(features)
    feature_example_ids = table.column("example_id").to_pylist()
    gold_ids = [row.example_id for row in gold]
    unknown = sorted(set(feature_example_ids) - set(gold_ids))
    if unknown:
        raise ValueError(f"{len(unknown)} feature example ids are not rows of the gold TSV (e.g. {unknown[:3]})")
    covered = set(feature_example_ids)
    skipped = [example_id for example_id in gold_ids if example_id not in covered]
    skipped_by_prep = set(skipped_ids)
    unexplained = [example_id for example_id in skipped if example_id not in skipped_by_prep]
    if unexplained:
        raise ValueError(
            f"{len(unexplained)} gold rows have no features and were not skipped by prep (e.g. {unexplained[:3]}); "
            "the features were built from another file"
        )

    started = time.perf_counter()
    feature_probs = gap_probabilities(model, table, cfg.batch_size, device=device, pad_id=pad_id)
    inference_s = time.perf_counter() - started
    by_example = example_probabilities(feature_example_ids, feature_probs)
    probs = np.stack([by_example.get(example_id, UNIFORM) for example_id in gold_ids])
    scored, decisions = score_probabilities(gold, probs)
    return GapResults(
        metrics=scored["metrics"], scorecard=scored["scorecard"], confusion_matrix=scored["confusion_matrix"],
        example_ids=gold_ids, probabilities=probs, decisions=decisions,
        counts={"examples": len(gold_ids), "features": table.num_rows, "examples_without_features": len(skipped)},
        timing={"inference_seconds": inference_s,
                "features_per_second": table.num_rows / inference_s if inference_s > 0 else None},
    )


def evaluate(context: EvalContext) -> EvalOutcome:
    """The evaluation engine's entry: score the run against the gold TSV, list the files to write."""
    gold = read_gap_gold(context.data_path)
    results = evaluate_gap(context.model, context.features, gold, context.config, device=context.device,
                           pad_id=context.pad_id, skipped_ids=context.skipped_ids)
    summary = {"metrics": results.metrics, "scorecard": results.scorecard,
               "confusion_matrix": results.confusion_matrix, "counts": results.counts, "timing": results.timing}

    def write_files(folder: Path) -> None:
        write_submission_csv(folder / SUBMISSION_FILE, results.example_ids, results.probabilities)
        write_system_tsv(folder / SYSTEM_FILE, results.example_ids, results.decisions)

    return EvalOutcome(summary=summary, write_files=write_files)
