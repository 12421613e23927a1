"""The SQuAD span model: the encoder plus a linear start/end head; its loss, batches and held-out counts.

``SquadModel.forward(input_ids, attention_mask, token_type_ids=None) -> (start_logits, end_logits)``
    ``input_ids, attention_mask, token_type_ids``: LongTensor ``[B, T]``. Returns two float32
    ``[B, T]`` tensors; positions where ``attention_mask == 0`` hold ``finfo(float32).min`` so
    padding never wins a softmax or an argmax and the loss does not depend on how far a batch
    was padded. It also accepts (and ignores) the label and id keys a collated batch carries, so
    ``model(**batch)`` works.

The head runs in float32 even under autocast (tiny, and keeps the loss out of fp16's range).

:func:`save_question_answering` writes the model as Hugging Face's ``...ForQuestionAnswering``
(``AutoModelForQuestionAnswering`` and the ``question-answering`` pipeline load it): same
encoder, and ``qa_outputs`` is this head (channel 0 start, 1 end, HF's ``split`` order). HF's
logits are not masked at padding; decoding never picks a padding position either way.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from train.data import int_column, token_batch
from train.model import check_extra, encode, float32_region, init_linear

HEADS = ("span",)
CLS_ID, SEP_ID = 101, 102
_MARKER_ID = 1000
_WORDS = (2000, 2999)  # plain word-piece ids of the BERT uncased vocab


class SquadModel(nn.Module):
    task = "squad"
    head_name = "span"

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 2)
        init_linear(self.head, encoder.config.initializer_range)

    def forward(self, input_ids, attention_mask, token_type_ids=None, **extra):
        check_extra(extra)
        hidden = encode(self.encoder, input_ids, attention_mask, token_type_ids)
        with float32_region(hidden.device.type):
            logits = self.head(hidden.float())  # [B, T, 2]
            logits = logits.masked_fill((attention_mask == 0).unsqueeze(-1), torch.finfo(torch.float32).min)
        start_logits, end_logits = logits.unbind(dim=-1)
        return start_logits.contiguous(), end_logits.contiguous()



def save_question_answering(model: SquadModel, folder: str | Path) -> None:
    """Save ``model`` as ``AutoModelForQuestionAnswering`` (``BertForQuestionAnswering`` for BERT) in ``folder``.

    The base model has no pooler, like our encoder, so both state dicts load strictly: every
    weight of the saved model is ours and none is newly initialised on load.
    """
    from transformers import AutoModelForQuestionAnswering

    config = copy.deepcopy(model.encoder.config)
    config.num_labels = 2  # qa_outputs: start, end
    qa = AutoModelForQuestionAnswering.from_config(config)
    qa.base_model.load_state_dict(model.encoder.state_dict(), strict=True)
    qa.qa_outputs.load_state_dict(model.head.state_dict(), strict=True)
    qa.save_pretrained(str(folder))


def build_model(head: str, encoder, data_info: dict | None = None) -> SquadModel:
    if head not in HEADS:
        raise ValueError(f"SQuAD has one head, 'span'; got {head!r}")
    return SquadModel(encoder)


def squad_loss(start_logits, end_logits, start_positions, end_positions) -> torch.Tensor:
    """Mean of the start and end cross-entropies (Hugging Face's BertForQuestionAnswering loss)."""
    return (F.cross_entropy(start_logits.float(), start_positions)
            + F.cross_entropy(end_logits.float(), end_positions)) / 2



def loss(output, batch: dict) -> torch.Tensor:
    start_logits, end_logits = output
    return squad_loss(start_logits, end_logits, batch["start_positions"], batch["end_positions"])


def eval_counts(output, batch: dict) -> dict:
    """Rows whose start and end token are both right (``eval_span_exact``)."""
    start, end = output
    exact = (start.argmax(-1) == batch["start_positions"]) & (end.argmax(-1) == batch["end_positions"])
    return {"span_exact": exact.sum()}


def collate_squad(rows: pa.Table, pad_id: int = 0, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """SQuAD rows -> ``input_ids, attention_mask, token_type_ids`` ``[B, T]`` (+ start/end_positions ``[B]``).

    Labels are included when the rows have them; the eval split's ``offset_mapping`` stays in
    the table (post-processing reads it by ``feature_id``, which is returned too).
    """
    batch = token_batch(rows, pad_id, pad_to_multiple_of)
    for name in ("start_positions", "end_positions"):
        if name in rows.column_names:
            batch[name] = int_column(rows, name)
    return batch



def synthetic_squad_table(rows: int, seed: int = 0, min_len: int = 24, max_len: int = 96) -> pa.Table:
    """Random SQuAD rows whose answer starts at a marker token and spans three tokens."""
    rng = np.random.default_rng(seed)
    input_ids, token_types, starts, ends = [], [], [], []
    for _ in range(rows):
        length = int(rng.integers(min_len, max_len + 1))
        question = int(rng.integers(4, 9))
        ids = rng.integers(*_WORDS, size=length).tolist()
        ids[0], ids[question + 1], ids[-1] = CLS_ID, SEP_ID, SEP_ID
        start = int(rng.integers(question + 2, length - 4))
        ids[start] = _MARKER_ID
        input_ids.append(ids)
        token_types.append([0] * (question + 2) + [1] * (length - question - 2))
        starts.append(start)
        ends.append(start + 2)
    return pa.table({
        "feature_id": pa.array(np.arange(rows), pa.int64()),
        "example_id": pa.array([f"q{i}" for i in range(rows)]),
        "example_index": pa.array(np.arange(rows), pa.int32()),
        "input_ids": pa.array(input_ids, pa.list_(pa.int32())),
        "token_type_ids": pa.array(token_types, pa.list_(pa.int8())),
        "start_positions": pa.array(starts, pa.int32()),
        "end_positions": pa.array(ends, pa.int32()),
    })
