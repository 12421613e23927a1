"""What makes CPU training fast besides the matmuls: dropout from fewer random draws, attention
without the fused kernel's slow backward, and an allocator that keeps freed memory. Same model, same
dropout distribution; only speed changes (``--no-fast-cpu`` to ``python -m train``,
``--<Task>FineTuned-fast-cpu false`` in Luigi, turns all three off).

Why (profiles of a MiniLM step, 2-core AVX512-BF16 EPYC, bf16 autocast, batch 16):
- torch's CPU dropout draws one Mersenne-Twister number per element (``bernoulli_``), serially on
  one core: 24% of a GAP step, most of it for the attention probabilities ``[B, heads, T, T]``.
  :func:`fast_dropout` cuts each 64-bit draw into four 16-bit slices, one per element: a quarter
  of the draws, from the same generator (so ``torch.manual_seed`` and checkpoints' RNG state still
  govern it). An element is dropped with probability ``round(p * 65536) / 65536`` (0.1 -> 0.100006)
  and kept ones are scaled by the exact inverse of the keep probability, so the expectation is kept.
- With attention dropout on, SDPA takes its math path, in fp32 even under bf16 autocast, with a
  masked-row check on every call (``isneginf``, ``all``, ``where``); with it off, SDPA's fused CPU
  kernel has a backward about 4x its forward at MiniLM's head size (32). :func:`attention` does
  training attention as two batched matmuls and a softmax in the autocast dtype, its dropout by
  :func:`fast_dropout`; evaluation and inference keep SDPA.
- glibc gives each allocation above its mmap threshold (128 KiB, rising to at most 32 MiB) pages of
  its own and unmaps them on free, so each step's large activations (SQuAD-384 attention, batch 16:
  56 MB a layer in bf16) are page-faulted in anew:
  :func:`keep_freed_memory` serves them from the heap and keeps it while training (SQuAD-384 bf16
  steps 1.3x faster, peak memory about 10% higher). The usual advice is jemalloc or tcmalloc
  through ``LD_PRELOAD``; this needs no install and applies to the training process only.

:func:`install` puts the first two into a loaded model. The attention part needs an architecture
that takes Transformers' attention interface (BERT, RoBERTa, ELECTRA, ...); the dropout part works
on any.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import math
import platform

import torch
from torch import nn

ATTENTION = "bertflow_cpu"  # the name registered with Transformers' attention interface
_SLICES = 4  # 16-bit slices per 64-bit draw
_INT16_MIN = -(2 ** 15)
# What BERT-style layers pass that plain attention may ignore (anything else set: SDPA does the call).
_PLAIN_ARGUMENTS = ("position_ids", "encoder_hidden_states", "output_attentions")


def keep_mask(shape: torch.Size | tuple[int, ...], p: float, device: torch.device | str = "cpu",
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, float]:
    """``(keep, scale)``: a uint8 0/1 mask of ``shape``, each element 0 (dropped) with probability
    ``round(p * 65536) / 65536``, and ``1 / keep probability``, the factor for the kept ones.

    uint8, not bool: ``x * keep`` with a uint8 mask runs vectorized, about 4x ``torch.where`` on a
    bool mask (CPU, bf16 and fp32)."""
    numel = math.prod(shape)
    draws = torch.empty((numel + _SLICES - 1) // _SLICES, dtype=torch.int64, device=device)
    draws.random_(-(2 ** 63), None, generator=generator)  # every bit uniform (the full int64 range)
    dropped = round(p * 65536)
    keep = draws.view(torch.int16)[:numel].view(shape) >= _INT16_MIN + dropped
    return keep.view(torch.uint8), 65536 / (65536 - dropped)


class _Dropout(torch.autograd.Function):
    """``x * keep * scale`` (``scale`` 1: left out), saving only the uint8 mask for the backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _masked(x, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return _masked(grad, keep, ctx.scale), None, None


def _masked(x: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    out = x * keep
    return out if scale == 1.0 else out.mul_(scale)


def fast_dropout(x: torch.Tensor, p: float, training: bool = True, scaled: bool = True) -> tuple[torch.Tensor, float] | torch.Tensor:
    """``nn.functional.dropout(x, p, training)`` with the mask of :func:`keep_mask`.

    ``scaled=False`` leaves the kept elements unscaled and returns ``(x, scale)``: the caller applies
    ``scale`` to a smaller tensor downstream (attention scales ``[B, heads, T, d]`` values rather than
    ``[B, heads, T, T]`` probabilities).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability must be in [0, 1], got {p}")
    if not training or p == 0.0:
        out, scale = x, 1.0
    elif round(p * 65536) == 65536:
        out, scale = x * 0.0, 1.0
    else:
        keep, scale = keep_mask(x.shape, p, x.device)
        out = _Dropout.apply(x, keep, scale if scaled else 1.0)
    return out if scaled else (out, scale)


class FastDropout(nn.Dropout):
    """``nn.Dropout`` drawing its mask with :func:`fast_dropout` (same ``p``, nothing saved)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
              **kwargs) -> tuple[torch.Tensor, None]:
    """Transformers' attention interface: ``query/key/value`` ``[B, heads, T, d]``, a boolean
    ``attention_mask`` (True = attend, broadcastable to ``[B, heads, T, T]``, or None) -> ``[B, T, heads, d]``.

    In training with autograd on: ``softmax(q k^T * scaling + mask)``, :func:`fast_dropout`, ``@ v``.
    Otherwise (evaluation, inference, other devices), and for any argument beyond plain attention's
    (a position bias, a causal flag, a soft cap, ...), Transformers' own SDPA function.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    unknown = [name for name, value in kwargs.items() if name not in _PLAIN_ARGUMENTS and value is not None and value is not False]
    if unknown or not (module.training and torch.is_grad_enabled() and query.device.type == "cpu"):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    scores = torch.matmul(query * scaling, key.transpose(2, 3))  # scaled on [T, d], not on [T, T]
    if attention_mask is not None and attention_mask.dtype == torch.bool:
        scores = scores.masked_fill(attention_mask.logical_not(), torch.finfo(scores.dtype).min)
    elif attention_mask is not None:
        scores = scores + attention_mask  # an additive mask
    probs, scale = fast_dropout(torch.softmax(scores, dim=-1), dropout, scaled=False)
    if scale != 1.0:
        value = value * scale  # the dropout's 1 / keep probability, on [T, d]
    return torch.matmul(probs.to(value.dtype), value).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface, sdpa_mask

    if ATTENTION not in ALL_MASK_ATTENTION_FUNCTIONS:
        AttentionInterface.register(ATTENTION, attention)
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)


def install(model: nn.Module) -> dict:
    """Swap every ``nn.Dropout`` of ``model`` for :class:`FastDropout` and, where the encoder uses
    SDPA through Transformers' attention interface, its attention for :func:`attention`, in place.
    Returns what changed, for the run's record."""
    swapped = 0
    for parent in model.modules():
        for name, child in parent.named_children():
            if type(child) is nn.Dropout:
                setattr(parent, name, FastDropout(child.p, child.inplace))
                swapped += 1
    attention_swapped = []
    for sub in model.modules():
        config = getattr(sub, "config", None)
        if (hasattr(sub, "set_attn_implementation") and getattr(config, "_attn_implementation", None) == "sdpa"
                and sub._can_set_attn_implementation()):
            _register()
            sub.set_attn_implementation(ATTENTION)
            attention_swapped.append(type(sub).__name__)
    return {"dropout_modules": swapped, "attention": attention_swapped}


# glibc's mallopt parameters, and their defaults (restored after training).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_DEFAULT_TRIM_THRESHOLD, _DEFAULT_MMAP_MAX = 128 * 1024, 65536


@contextlib.contextmanager
def keep_freed_memory():
    """While inside: glibc serves every allocation from its heap (no ``mmap``) and never trims it, so
    a freed activation's pages are reused by the next step instead of being unmapped and faulted in
    again. Yields whether it applied (glibc only); the defaults come back on exit and the heap is trimmed."""
    libc = _glibc()
    if libc is None:
        yield False
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2 ** 31 - 1)
    try:
        yield True
    finally:
        libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_TRIM_THRESHOLD)
        libc.malloc_trim(0)


def _glibc():
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None
