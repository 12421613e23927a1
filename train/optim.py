"""What a training run is set up with besides the model: seeding, the optimizer and its schedule, step counts."""

from __future__ import annotations

import torch

from train.config import TrainConfig
from train.data import steps_per_epoch


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: 0 -> 1 over ``warmup_steps``, then linearly down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, no weight decay on biases, LayerNorm weights and other vectors.

    Fused kernels on CUDA, and on CPU where torch has them (2.4+; what the HF Trainer uses by
    default too): one kernel per step instead of a chain of per-tensor ops.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda" or (device.type == "cpu" and _torch_at_least(2, 4))
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps, fused=fused,
    )


def _torch_at_least(major: int, minor: int) -> bool:
    found = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return found >= (major, minor)


def total_train_steps(config: TrainConfig, num_rows: int) -> int:
    per_epoch = steps_per_epoch(num_rows, config.global_batch_size)
    if per_epoch == 0:
        raise ValueError(f"{num_rows} training rows cannot fill one global batch of {config.global_batch_size}")
    total = per_epoch * config.epochs
    return min(total, config.max_steps) if config.max_steps else total
