"""Temperature scaling (Guo et al., 2017): one scalar that makes a classifier's probabilities honest.

A fine-tuned classifier is usually over-confident: right about as often as before, but too sure
when wrong, which is what log loss punishes. Dividing the logits by one temperature ``T`` fitted
on held-out data (never the test set) keeps every argmax, hence accuracy and F1, and lowers the
held-out negative log-likelihood. The NLL is convex in ``1 / T``, so a golden-section search over
``log(1 / T)`` finds its minimum.
"""

from __future__ import annotations

import math

import numpy as np

_LOG_SCALE_RANGE = (-6.0, 6.0)  # 1/T from ~0.0025 to ~400
_ITERATIONS = 100


def nll(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under ``softmax(logits / temperature)``."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return float(np.mean(log_norm - z[np.arange(len(z)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The ``T > 0`` that minimises :func:`nll` on ``(logits [N, C], labels [N])``."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if logits.ndim != 2 or len(logits) != len(labels) or len(labels) == 0:
        raise ValueError(f"need logits [N, C] and labels [N] with N > 0; got {logits.shape} and {labels.shape}")
    if labels.min() < 0 or labels.max() >= logits.shape[1]:
        raise ValueError(f"labels must be in [0, {logits.shape[1]}); got {labels.min()}..{labels.max()}")

    def loss(log_scale: float) -> float:
        return nll(logits, labels, 1.0 / math.exp(log_scale))

    low, high = _LOG_SCALE_RANGE
    ratio = (math.sqrt(5.0) - 1.0) / 2.0
    x1, x2 = high - ratio * (high - low), low + ratio * (high - low)
    f1, f2 = loss(x1), loss(x2)
    for _ in range(_ITERATIONS):
        if f1 <= f2:
            high, x2, f2 = x2, x1, f1
            x1 = high - ratio * (high - low)
            f1 = loss(x1)
        else:
            low, x1, f1 = x1, x2, f2
            x2 = low + ratio * (high - low)
            f2 = loss(x2)
    return 1.0 / math.exp((low + high) / 2.0)
