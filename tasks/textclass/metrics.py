"""Text classification and regression scores, per text, in plain numpy.

Classification scores take class ids (positions in the ordered label set) and two sentinels, so
that every text of the data file counts and none is silently dropped:

- :data:`NO_PREDICTION` (-1) as a prediction: the text has no features (prep skipped it: empty
  text, missing label, a label outside the training label set). It is a wrong answer.
- :data:`OUTSIDE_LABELS` (-2) as a gold label: the text's label is not in the label set (unseen
  in training) or unknown (prep skipped the row for a missing label). No prediction can match it.

With those, every figure is what scikit-learn computes on the same arrays with
``labels=range(num_labels)`` (accuracy_score, precision_recall_fscore_support with
``zero_division=0``, f1_score macro / weighted, confusion_matrix) or on all texts
(matthews_corrcoef, Gorodkin's multi-class formula over the full contingency table, where
"no prediction" and "outside the label set" are extra categories and so count against it).
Regression: Pearson, Spearman (Pearson of average ranks, ties sharing their mean rank) and MSE.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NO_PREDICTION = -1
OUTSIDE_LABELS = -2


def _pair(gold, predicted) -> tuple[np.ndarray, np.ndarray]:
    gold, predicted = np.asarray(gold, dtype=np.int64), np.asarray(predicted, dtype=np.int64)
    if gold.shape != predicted.shape or gold.ndim != 1 or gold.size == 0:
        raise ValueError(f"{gold.size} gold labels for {predicted.size} predictions (need the same, non-zero count)")
    return gold, predicted


def accuracy(gold: Sequence[int], predicted: Sequence[int]) -> float:
    """Share of texts predicted right; a text with no prediction or a gold label outside the set is wrong."""
    gold, predicted = _pair(gold, predicted)
    return float(((gold == predicted) & (gold >= 0)).mean())


def confusion_matrix(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> list[list[int]]:
    """``matrix[gold][predicted]`` over the label set; texts with a sentinel on either side are not in it."""
    gold, predicted = _pair(gold, predicted)
    inside = (gold >= 0) & (predicted >= 0)
    if (gold[inside] >= num_labels).any() or (predicted[inside] >= num_labels).any():
        raise ValueError(f"class ids must be below num_labels={num_labels}")
    matrix = np.zeros((num_labels, num_labels), dtype=np.int64)
    np.add.at(matrix, (gold[inside], predicted[inside]), 1)
    return matrix.tolist()


def _divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's zero_division=0)."""
    out = np.zeros(numerator.shape, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def per_label_scores(gold: Sequence[int], predicted: Sequence[int], num_labels: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class id.

    A text with no prediction is a false negative for its gold class; a prediction for a text whose
    gold label is outside the set is a false positive for the predicted class.
    """
    gold, predicted = _pair(gold, predicted)
    classes = np.arange(num_labels)
    true_positives = ((gold[:, None] == classes) & (predicted[:, None] == classes)).sum(axis=0)
    predicted_count = (predicted[:, None] == classes).sum(axis=0)
    support = (gold[:, None] == classes).sum(axis=0)
    precision = _divide(true_positives, predicted_count)
    recall = _divide(true_positives, support)
    f1 = _divide(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def f1_averages(scores: dict[str, np.ndarray]) -> dict[str, float]:
    """Macro F1 (unweighted mean over the label set) and weighted F1 (weights: gold support)."""
    f1, support = scores["f1"], scores["support"]
    weighted = float((f1 * support).sum() / support.sum()) if support.sum() else 0.0
    return {"macro_f1": float(f1.mean()) if f1.size else 0.0, "weighted_f1": weighted}


def matthews_corrcoef(gold: Sequence[int], predicted: Sequence[int]) -> float:
    """Multi-class MCC (Gorodkin 2004), 0.0 where undefined, over every distinct value on either side."""
    gold, predicted = _pair(gold, predicted)
    values, codes = np.unique(np.concatenate([gold, predicted]), return_inverse=True)
    gold_codes, predicted_codes = codes[: gold.size], codes[gold.size :]
    table = np.zeros((values.size, values.size), dtype=np.float64)
    np.add.at(table, (gold_codes, predicted_codes), 1)
    true_sums, predicted_sums = table.sum(axis=1), table.sum(axis=0)
    correct, total = np.trace(table), table.sum()
    covariance = correct * total - true_sums @ predicted_sums
    denominator = (total**2 - predicted_sums @ predicted_sums) * (total**2 - true_sums @ true_sums)
    return float(covariance / np.sqrt(denominator)) if denominator > 0 else 0.0


def score_classification(gold: Sequence[int], predicted: Sequence[int], labels: Sequence[str]) -> dict:
    """Every per-text classification figure: ``{"metrics", "per_label", "confusion_matrix"}``.

    ``metrics``: accuracy, macro_f1, weighted_f1, mcc, texts, texts_without_prediction and
    texts_outside_labels (gold outside the label set). ``per_label``: one record per label in
    label-set order. ``confusion_matrix``: ``{"labels", "matrix"}`` (gold rows, predicted columns).
    """
    gold, predicted = _pair(gold, predicted)
    labels = [str(label) for label in labels]
    if not labels:
        raise ValueError("a classification needs a non-empty label set")
    scores = per_label_scores(gold, predicted, len(labels))
    metrics = {
        "accuracy": accuracy(gold, predicted),
        **f1_averages(scores),
        "mcc": matthews_corrcoef(gold, predicted),
        "texts": int(gold.size),
        "texts_without_prediction": int((predicted == NO_PREDICTION).sum()),
        "texts_outside_labels": int((gold == OUTSIDE_LABELS).sum()),
    }
    per_label = [
        {"label": label, "precision": float(scores["precision"][k]), "recall": float(scores["recall"][k]),
         "f1": float(scores["f1"][k]), "support": int(scores["support"][k])}
        for k, label in enumerate(labels)
    ]
    return {"metrics": metrics, "per_label": per_label,
            "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(gold, predicted, len(labels))}}


# ---------------------------------------------------------------------------------------------
# regression
# ---------------------------------------------------------------------------------------------


def _values(gold, predicted) -> tuple[np.ndarray, np.ndarray]:
    gold, predicted = np.asarray(gold, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    if gold.shape != predicted.shape or gold.ndim != 1 or gold.size == 0:
        raise ValueError(f"{gold.size} gold values for {predicted.size} predictions (need the same, non-zero count)")
    if not (np.isfinite(gold).all() and np.isfinite(predicted).all()):
        raise ValueError("regression values contain NaN or infinity")
    return gold, predicted


def average_ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span (scipy.stats.rankdata 'average')."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    # Start of each run of equal values, and the run each sorted position belongs to.
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], values.size]
    run_of = np.repeat(np.arange(starts.size), ends - starts)
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = ((starts + 1 + ends) / 2.0)[run_of]
    return ranks


def pearson(gold: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Pearson's r; None where undefined (fewer than two values, or either side constant)."""
    gold, predicted = _values(gold, predicted)
    gold, predicted = gold - gold.mean(), predicted - predicted.mean()
    denominator = np.sqrt((gold @ gold) * (predicted @ predicted))
    if gold.size < 2 or denominator == 0:
        return None
    return float(np.clip((gold @ predicted) / denominator, -1.0, 1.0))


def spearman(gold: Sequence[float], predicted: Sequence[float]) -> float | None:
    """Spearman's rho: Pearson's r of the average ranks."""
    gold, predicted = _values(gold, predicted)
    return pearson(average_ranks(gold), average_ranks(predicted))


def mean_squared_error(gold: Sequence[float], predicted: Sequence[float]) -> float:
    gold, predicted = _values(gold, predicted)
    return float(((gold - predicted) ** 2).mean())


def score_regression(gold: Sequence[float], predicted: Sequence[float]) -> dict:
    """``{"metrics": {pearson, spearman, mse, texts}}`` over the texts that have a prediction."""
    gold, predicted = _values(gold, predicted)
    return {"metrics": {"pearson": pearson(gold, predicted), "spearman": spearman(gold, predicted),
                        "mse": mean_squared_error(gold, predicted), "texts": int(gold.size)}}
