"""The GAP pronoun-resolution model: the encoder plus one of three heads; loss, batches, held-out counts.

``GapModel.forward(input_ids, attention_mask, token_type_ids=None, *, p_start, p_end, a_start, a_end, b_start, b_end, segment_ids=None) -> logits``
    ``input_ids, attention_mask`` ``[B, T]``; the six bounds are LongTensor ``[B]`` sub-token
    spans with exclusive ends (the GAP feature columns); ``segment_ids`` ``[B, T]`` (1 = P,
    2 = A, 3 = B, 0 elsewhere) is required by the segmentation head and ignored by the others.
    Returns float32 ``[B, 3]`` logits for the classes (A, B, NEITHER) = labels (0, 1, 2).

Heads (a mention's vector is the **mean of its sub-tokens' last hidden states** over
``[start, end)``; the GAP write-ups took the first sub-token):
- ``concat``: ``Linear(3H, 3)`` over ``[P; A; B]``.
- ``multiply`` (default): P attends over A, B and a learned NEITHER key: query
  ``q = W_q P``, keys ``W_k A``, ``W_k B`` and a learned vector ``n``; logits are
  ``(q.k_A, q.k_B, q.n) / sqrt(H)``.
- ``segment``: token types 1/2/3 mark P/A/B (``segment_ids``); ``Linear(H, 3)`` on ``[CLS]``.
  Only for encoders with a token-type embedding (BERT, RoBERTa, ELECTRA); MPNet and DistilBERT
  have none, and :func:`build_model` refuses the head for them.
  The type embedding grows to 4 rows: row 0 keeps the pretrained row 0; rows 1-3 start at
  pretrained row 0 plus N(0, initializer_range) noise. Purely random rows (as in the original
  write-up) move every P/A/B token off the distribution the encoder was trained on; anchoring
  them on row 0 keeps those tokens in-distribution while the noise lets the three types tell
  themselves apart. The resized encoder (``type_vocab_size`` 4) is what gets saved.

Every head carries a ``temperature`` buffer (1 unless the run was calibrated, see
:mod:`train.calibrate`): ``GapModel`` returns the head's logits divided by it, so a saved,
calibrated model gives calibrated probabilities wherever it is loaded. Heads run in float32
even under autocast.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from train.data import int_column, token_batch
from train.model import check_extra, encode, float32_region, init_linear, takes_token_types

HEADS = ("concat", "multiply", "segment")
SEGMENT_TYPE_VOCAB = 4
POSITION_COLUMNS = ("p_start", "p_end", "a_start", "a_end", "b_start", "b_end")
CLS_ID, SEP_ID = 101, 102
_MARKER_ID = 1000
_WORDS = (2000, 2999)  # plain word-piece ids of the BERT uncased vocab


def mean_pool_spans(hidden: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden[b, start[b]:end[b]]`` for each row b -> ``[B, H]`` (an empty span counts as 1 token)."""
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    mask = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])
    mask = mask.to(hidden.dtype)
    summed = torch.bmm(mask.unsqueeze(1), hidden).squeeze(1)
    return summed / mask.sum(dim=1, keepdim=True).clamp_min(1.0)



class GapHead(nn.Module):
    """Base of the GAP heads: holds the calibration temperature (saved in head.safetensors)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("temperature", torch.ones(()))


class ConcatHead(GapHead):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(3 * hidden, 3)

    def forward(self, p, a, b, cls):
        return self.classifier(self.dropout(torch.cat([p, a, b], dim=-1)))


class MultiplyHead(GapHead):
    def __init__(self, hidden: int, dropout: float, initializer_range: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.neither = nn.Parameter(torch.randn(hidden) * initializer_range)
        self.scale = 1.0 / math.sqrt(hidden)

    def forward(self, p, a, b, cls):
        q = self.query(self.dropout(p))  # [B, H]
        keys = self.key(self.dropout(torch.stack([a, b], dim=1)))  # [B, 2, H]
        keys = torch.cat([keys, self.neither.expand(keys.shape[0], 1, -1)], dim=1)  # [B, 3, H]
        return torch.einsum("bh,bkh->bk", q, keys) * self.scale


class SegmentHead(GapHead):
    def __init__(self, hidden: int, dropout: float):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden, 3)

    def forward(self, p, a, b, cls):
        return self.classifier(self.dropout(cls))



class GapModel(nn.Module):
    task = "gap"

    def __init__(self, encoder: nn.Module, head: str):
        super().__init__()
        config = encoder.config
        self.encoder = encoder
        self.head_name = head
        if head == "concat":
            self.head = ConcatHead(config.hidden_size, config.hidden_dropout_prob)
        elif head == "multiply":
            self.head = MultiplyHead(config.hidden_size, config.hidden_dropout_prob, config.initializer_range)
        elif head == "segment":
            if config.type_vocab_size < SEGMENT_TYPE_VOCAB:
                raise ValueError(
                    f"segment head needs type_vocab_size >= {SEGMENT_TYPE_VOCAB}; "
                    "call resize_token_types first"
                )
            self.head = SegmentHead(config.hidden_size, config.hidden_dropout_prob)
        else:
            raise ValueError(f"unknown GAP head {head!r}")
        for module in self.head.modules():
            if isinstance(module, nn.Linear):
                init_linear(module, config.initializer_range)

    def forward(self, input_ids, attention_mask, token_type_ids=None, *, p_start, p_end, a_start, a_end,
                b_start, b_end, segment_ids=None, **extra):
        check_extra(extra)
        if self.head_name == "segment":
            if segment_ids is None:
                raise ValueError("the segmentation head needs segment_ids")
            token_type_ids = segment_ids
        hidden = encode(self.encoder, input_ids, attention_mask, token_type_ids)
        with float32_region(hidden.device.type):
            hidden = hidden.float()
            p = mean_pool_spans(hidden, p_start, p_end)
            a = mean_pool_spans(hidden, a_start, a_end)
            b = mean_pool_spans(hidden, b_start, b_end)
            return self.head(p, a, b, hidden[:, 0]) / self.head.temperature



def resize_token_types(encoder, num_types: int = SEGMENT_TYPE_VOCAB, generator: torch.Generator | None = None) -> None:
    """Grow the token-type embedding to ``num_types`` rows: row 0 kept, new rows = row 0 + noise."""
    old = encoder.embeddings.token_type_embeddings
    if old.num_embeddings >= num_types:
        return
    std = encoder.config.initializer_range
    weight = old.weight.detach()
    new = nn.Embedding(num_types, weight.shape[1], device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        new.weight[0] = weight[0]
        noise = torch.randn(num_types - 1, weight.shape[1], generator=generator, dtype=weight.dtype) * std
        new.weight[1:] = weight[0] + noise.to(weight.device)
    encoder.embeddings.token_type_embeddings = new
    encoder.config.type_vocab_size = num_types



def build_model(head: str, encoder, data_info: dict | None = None) -> GapModel:
    """The GAP model on ``encoder``; the segment head first grows its token types (no-op when saved so)."""
    if head not in HEADS:
        raise ValueError(f"GAP head must be one of {HEADS}, got {head!r}")
    if head == "segment":
        if not takes_token_types(encoder):
            raise ValueError(
                f"the segment head marks P/A/B with token types, and this encoder ({encoder.config.model_type}) "
                f"has none; use --head multiply or concat"
            )
        resize_token_types(encoder)
    return GapModel(encoder, head)


def loss(output, batch: dict) -> torch.Tensor:
    return F.cross_entropy(output.float(), batch["label"])



def eval_counts(output, batch: dict) -> dict:
    return {"accuracy": (output.argmax(dim=-1) == batch["label"]).sum()}


def collate_gap(rows: pa.Table, pad_id: int = 0, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """GAP rows -> ``input_ids, attention_mask, segment_ids`` ``[B, T]``, the six span bounds and ``label`` ``[B]``.

    GAP inputs are one segment, so there are no ``token_type_ids`` (the model uses zeros, or
    ``segment_ids`` with the segmentation head).
    """
    batch = token_batch(rows, pad_id, pad_to_multiple_of, type_column="segment_ids")
    for name in POSITION_COLUMNS:
        batch[name] = int_column(rows, name)
    if "label" in rows.column_names:
        batch["label"] = int_column(rows, "label")
    return batch



def synthetic_gap_table(rows: int, seed: int = 0, min_len: int = 12, max_len: int = 48) -> pa.Table:
    """Random GAP rows whose pronoun token repeats the first token of the right name (A or B), or is a fresh token (NEITHER)."""
    rng = np.random.default_rng(seed)
    columns = {k: [] for k in ("input_ids", "segment_ids", "p_start", "p_end", "a_start", "a_end",
                               "b_start", "b_end", "label")}
    for _ in range(rows):
        length = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(*_WORDS, size=length).tolist()
        ids[0], ids[-1] = CLS_ID, SEP_ID
        a, b, p = sorted(rng.choice(np.arange(1, length - 3), size=3, replace=False).tolist())
        a_end, b_end = a + 1 + (a + 1 < b) * int(rng.integers(0, 2)), b + 1
        label = int(rng.integers(0, 3))
        ids[p] = ids[a] if label == 0 else ids[b] if label == 1 else _MARKER_ID
        segments = [0] * length
        for start, end, kind in ((a, a_end, 2), (b, b_end, 3), (p, p + 1, 1)):
            segments[start:end] = [kind] * (end - start)
        for key, value in (("input_ids", ids), ("segment_ids", segments), ("p_start", p), ("p_end", p + 1),
                           ("a_start", a), ("a_end", a_end), ("b_start", b), ("b_end", b_end), ("label", label)):
            columns[key].append(value)
    return pa.table({
        "feature_id": pa.array(np.arange(rows), pa.int64()),
        "example_id": pa.array([f"synthetic-{i}" for i in range(rows)]),
        "example_index": pa.array(np.arange(rows), pa.int32()),
        "input_ids": pa.array(columns["input_ids"], pa.list_(pa.int32())),
        "segment_ids": pa.array(columns["segment_ids"], pa.list_(pa.int8())),
        **{k: pa.array(columns[k], pa.int32()) for k in ("p_start", "p_end", "a_start", "a_end", "b_start", "b_end")},
        "label": pa.array(columns["label"], pa.int8()),
        "gender": pa.array(["F"] * rows),
    })


