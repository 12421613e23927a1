"""GAP scores: Kaggle's multi-class log loss and the GAP benchmark's per-gender F1 and bias.

Two scorers look at the same predictions differently:

- Kaggle ("Gendered Pronoun Resolution"): one distribution over A / B / NEITHER per example;
  multi-class log loss after replacing each probability with ``max(min(p, 1 - 1e-15), 1e-15)``
  and dividing each row by its sum (Kaggle's MultiClassLogLoss), plus accuracy of the argmax.
- google-research-datasets/gap-coreference ``gap_scorer.py``: two binary decisions per example
  (is A coreferent with the pronoun? is B?), tallied as TP/FP/FN/TN overall and per gender of
  the pronoun; precision, recall and F1 in percent; bias = F1 feminine / F1 masculine (reported
  only when both are non-zero, like the scorer's "-").

Pure functions over arrays and small records, no files (see :mod:`tasks.gap.formats`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

LABELS = ("A", "B", "NEITHER")
KAGGLE_EPS = 1e-15
GENDER_NAMES = {None: "overall", "M": "masculine", "F": "feminine"}


@dataclass(frozen=True)
class GapGold:
    """One gold GAP row as the scorer sees it."""

    example_id: str
    a_coref: bool
    b_coref: bool
    gender: str  # "M" or "F"

    @property
    def label(self) -> int:
        """0 = A, 1 = B, 2 = NEITHER (the Kaggle class)."""
        if self.a_coref and self.b_coref:
            raise ValueError(f"{self.example_id}: both A and B are marked coreferent; GAP has one referent")
        return 0 if self.a_coref else 1 if self.b_coref else 2


@dataclass
class Tally:
    true_positives: int = 0
    false_positives: int = 0
    true_negatives: int = 0
    false_negatives: int = 0

    def recall(self) -> float:
        denominator = self.true_positives + self.false_negatives
        return 100.0 * self.true_positives / denominator if denominator else 0.0

    def precision(self) -> float:
        denominator = self.true_positives + self.false_positives
        return 100.0 * self.true_positives / denominator if denominator else 0.0

    def f1(self) -> float:
        recall, precision = self.recall(), self.precision()
        denominator = precision + recall
        return 2 * precision * recall / denominator if denominator else 0.0

    def as_dict(self) -> dict:
        return {
            "precision": self.precision(), "recall": self.recall(), "f1": self.f1(),
            "tp": self.true_positives, "fp": self.false_positives,
            "fn": self.false_negatives, "tn": self.true_negatives,
        }


def _as_probs(probs, num_classes: int | None = len(LABELS)) -> np.ndarray:
    array = np.asarray(probs, dtype=np.float64)
    if array.ndim != 2 or (num_classes is not None and array.shape[1] != num_classes):
        raise ValueError(f"probabilities must be [N, {num_classes}] (A, B, NEITHER), got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("probabilities contain NaN or infinity")
    if (array < 0).any():
        raise ValueError("probabilities must be >= 0")
    return array


def kaggle_log_loss(labels: Sequence[int], probs, eps: float = KAGGLE_EPS) -> float:
    """Multi-class log loss as Kaggle scores a submission: clip to [eps, 1-eps], renormalise rows.

    Any number of classes; ``labels`` are column indexes.
    """
    array = _as_probs(probs, num_classes=None)
    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape[0] != array.shape[0] or labels.shape[0] == 0:
        raise ValueError(f"{labels.shape[0]} labels for {array.shape[0]} probability rows")
    clipped = np.clip(array, eps, 1 - eps)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    return float(-np.log(clipped[np.arange(labels.shape[0]), labels]).sum() / labels.shape[0])


# Tie-break order for the argmax: a row without a preference (e.g. the uniform row given to an
# example prep could not featurize) claims no coreference.
_TIE_ORDER = np.array([2, 0, 1])


def predicted_labels(probs) -> np.ndarray:
    """argmax class per row; ties go to NEITHER, then A, then B."""
    return _TIE_ORDER[_as_probs(probs)[:, _TIE_ORDER].argmax(axis=1)]


def accuracy(labels: Sequence[int], predicted: Sequence[int]) -> float:
    labels, predicted = np.asarray(labels), np.asarray(predicted)
    if labels.shape != predicted.shape or labels.size == 0:
        raise ValueError(f"{labels.size} labels for {predicted.size} predictions")
    return float((labels == predicted).mean())


def confusion_matrix(labels: Sequence[int], predicted: Sequence[int], num_classes: int = len(LABELS)) -> list[list[int]]:
    """``matrix[gold][predicted]`` counts, rows and columns in :data:`LABELS` order."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels, dtype=np.int64), np.asarray(predicted, dtype=np.int64)), 1)
    return matrix.tolist()


def coref_decisions(predicted: Sequence[int]) -> list[tuple[bool, bool]]:
    """(A-coref, B-coref) per example from the predicted class, as the GAP TSV states them."""
    return [(int(label) == 0, int(label) == 1) for label in predicted]


def gap_scorer_tallies(gold: Sequence[GapGold], system: Mapping[str, tuple[bool, bool]]) -> dict:
    """TP/FP/FN/TN overall (key None) and per gender, as ``gap_scorer.calculate_scores`` counts."""
    missing = [row.example_id for row in gold if row.example_id not in system]
    if missing:
        raise KeyError(f"{len(missing)} gold GAP ids have no system decision, e.g. {missing[:3]}")
    tallies: dict = {}
    for row in gold:
        system_a, system_b = system[row.example_id]
        for gender in (None, row.gender):
            tally = tallies.setdefault(gender, Tally())
            for gold_value, system_value in ((row.a_coref, system_a), (row.b_coref, system_b)):
                if gold_value and system_value:
                    tally.true_positives += 1
                elif not gold_value and system_value:
                    tally.false_positives += 1
                elif not gold_value and not system_value:
                    tally.true_negatives += 1
                else:
                    tally.false_negatives += 1
    return tallies


def gap_scorecard(tallies: dict) -> dict:
    """Precision / recall / F1 overall, masculine, feminine, and the bias factor F/M (or None)."""
    card = {}
    for gender, name in GENDER_NAMES.items():
        card[name] = tallies.get(gender, Tally()).as_dict()
    f1_m, f1_f = card["masculine"]["f1"], card["feminine"]["f1"]
    card["bias_f_over_m"] = f1_f / f1_m if f1_m and f1_f else None
    return card


def score_gap(gold: Sequence[GapGold], probs) -> dict:
    """Every GAP figure for probabilities ``[N, 3]`` aligned with ``gold``.

    Returns the flat metrics (log_loss, accuracy, f1_overall, f1_masculine, f1_feminine,
    bias_f_over_m, ...), the scorer's card and the confusion matrix.
    """
    array = _as_probs(probs)
    if array.shape[0] != len(gold):
        raise ValueError(f"{array.shape[0]} probability rows for {len(gold)} gold rows")
    labels = [row.label for row in gold]
    predicted = predicted_labels(array)
    decisions = dict(zip((row.example_id for row in gold), coref_decisions(predicted)))
    card = gap_scorecard(gap_scorer_tallies(gold, decisions))
    metrics = {
        "log_loss": kaggle_log_loss(labels, array),
        "accuracy": accuracy(labels, predicted),
        "f1_overall": card["overall"]["f1"],
        "f1_masculine": card["masculine"]["f1"],
        "f1_feminine": card["feminine"]["f1"],
        "bias_f_over_m": card["bias_f_over_m"],
        "precision_overall": card["overall"]["precision"],
        "recall_overall": card["overall"]["recall"],
        "total": len(gold),
    }
    return {
        "metrics": metrics,
        "scorecard": card,
        "confusion_matrix": {"labels": list(LABELS), "matrix": confusion_matrix(labels, predicted)},
    }
