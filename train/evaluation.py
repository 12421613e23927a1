"""Scoring on the held-out split during training: loss, the task's counts, classifier logits, calibration.

The trainer calls :func:`evaluate` at every epoch end (``--eval-features``) and, with
``--calibrate``, :func:`calibrate_temperature` once at the end. Each rank takes a disjoint share
of the rows (no padded duplicates); sums are all-reduced and logits all-gathered, so every rank
ends with the same figures.
"""

from __future__ import annotations

import numpy as np
import torch

from train.calibrate import fit_temperature, nll
from train.config import TrainConfig
from train.data import FeatureSet, eval_batches
from train.dist import DistEnv, all_gather_objects, all_reduce_sum, to_device
from train.model import autocast_context, unwrap


@torch.no_grad()
def _eval_outputs(model, dataset: FeatureSet, config: TrainConfig, env: DistEnv, collate, batch_rows: int):
    """``(model output, batch)`` over this rank's share of ``dataset``, ``batch_rows`` rows a forward, in eval mode."""
    model = unwrap(model)
    was_training = model.training
    model.eval()
    try:
        for indices in eval_batches(dataset, batch_rows, env.rank, env.world_size):
            batch = to_device(collate(dataset.__getitems__(indices)), env.device)
            with autocast_context(config.precision, env.device):
                output = model(**batch)
            yield output, batch
    finally:
        model.train(was_training)


def eval_batch_rows(config: TrainConfig, spec) -> int:
    """Rows per held-out forward: twice a training micro-batch (no activations kept for backward)."""
    return 2 * config.micro_batch_size(spec.sequences_per_row)


def evaluate(model, dataset: FeatureSet, spec, config: TrainConfig, env: DistEnv, collate) -> dict:
    """``eval_loss`` and, per count the task reports (``spec.eval_counts``; ``spec`` is the task's
    :class:`tasks.spec.TrainSpec`), ``eval_<name>`` = count / rows, over the whole eval set: each
    rank takes a disjoint share (no padded duplicates), sums are all-reduced."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=env.device)
    rows = torch.zeros((), dtype=torch.float64, device=env.device)
    counts: dict[str, torch.Tensor] = {}
    for output, batch in _eval_outputs(model, dataset, config, env, collate, eval_batch_rows(config, spec)):
        n = len(batch["input_ids"])
        loss_sum += spec.loss(output, batch).double() * n
        rows += n
        for name, count in spec.eval_counts(output, batch).items():
            counts[name] = counts.get(name, torch.zeros((), dtype=torch.float64, device=env.device)) + count
    names = sorted(counts)
    sums = torch.stack([loss_sum, rows, *(counts[name] for name in names)])
    all_reduce_sum(sums, env)
    total = max(sums[1].item(), 1.0)
    metrics = {"eval_loss": sums[0].item() / total, "eval_rows": int(sums[1].item())}
    metrics.update({f"eval_{name}": sums[2 + k].item() / total for k, name in enumerate(names)})
    return metrics


def classifier_eval_logits(model, dataset: FeatureSet, config: TrainConfig, env: DistEnv, collate, batch_rows: int):
    """``(logits [N, classes], labels [N])`` float64 / int64 NumPy arrays of the whole eval set, on every rank."""
    logits, labels = [], []
    for output, batch in _eval_outputs(model, dataset, config, env, collate, batch_rows):
        if batch["label"].is_floating_point():
            raise ValueError("calibrate fits a softmax temperature over classes; these features are a regression")
        logits.append(output.float().cpu())
        labels.append(batch["label"].cpu())
    mine = (torch.cat(logits).double().numpy(), torch.cat(labels).numpy())
    shares = all_gather_objects(mine, env)
    return (np.concatenate([share[0] for share in shares]), np.concatenate([share[1] for share in shares]))


def calibrate_temperature(model, dataset: FeatureSet, spec, config: TrainConfig, env: DistEnv, collate) -> dict:
    """Fit the classifier head's temperature on ``dataset`` (the eval split) and set it on ``model``."""
    head = unwrap(model).head
    head.temperature.fill_(1.0)
    logits, labels = classifier_eval_logits(model, dataset, config, env, collate, eval_batch_rows(config, spec))
    temperature = fit_temperature(logits, labels)
    head.temperature.fill_(temperature)
    return {"temperature": temperature, "eval_loss_before": nll(logits, labels),
            "eval_loss_after": nll(logits, labels, temperature), "eval_rows": int(len(labels))}


def evaluations_since_best(eval_history: list[dict]) -> int:
    """How many held-out evaluations came after the one with the lowest eval loss (0: the latest is the
    lowest; a tie is no improvement, so the earlier of two equal losses is the best)."""
    losses = [entry["eval_loss"] for entry in eval_history]
    return len(losses) - 1 - losses.index(min(losses)) if losses else 0
