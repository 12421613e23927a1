"""RACE multiple-choice models: the plain ``mc`` head and DUMA; their loss, batches and held-out counts.

``forward(input_ids, attention_mask, token_type_ids=None, passage_start=None, passage_end=None,
qa_start=None, qa_end=None) -> logits``
    ``input_ids, attention_mask, token_type_ids``: LongTensor ``[B, 4, T]``, a question's four
    passage+question+option sequences; the spans are ``[B, 4]`` (``[start, end)`` of the passage
    and of the question+option in each sequence, from prep). Returns float32 logits ``[B, 4]``.

``mc``: Hugging Face's ``BertForMultipleChoice`` head exactly: each sequence's pooler output ->
dropout -> ``Linear(hidden, 1)``, the four scores a softmax over the options. Saved as
``AutoModelForMultipleChoice`` (:func:`save_multiple_choice`), which loads it with the head.

``duma`` (DUMA, Zhu, Zhao and Li, arXiv 2001.09415): on the encoder's last hidden states, a
dual multi-head co-attention between the passage and the question+option: the passage tokens
attend over the question+option tokens, and the question+option tokens over the passage
tokens (two ``nn.MultiheadAttention`` layers, as many heads as the encoder, each attending only
to the other part's tokens). Each side's outputs are mean-pooled over its own tokens, the two
vectors concatenated (the paper's fuse) -> dropout -> ``Linear(2 * hidden, 1)``. The encoder's
pooler is not used by DUMA, so it is frozen (no gradient, and DDP needs no
``find_unused_parameters``); the run's ``model/`` is the encoder, the head is in
``head.safetensors`` (``train.model.load_finetuned``).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import nn

from train.data import attention_mask_for, int_column, pad_list_column
from train.model import check_extra, float32_region, init_linear

HEADS = ("mc", "duma")
NUM_CHOICES = 4
SPAN_KEYS = ("passage_start", "passage_end", "qa_start", "qa_end")
CLS_ID, SEP_ID, MARKER_ID = 101, 102, 1000
_WORDS = (2000, 2999)


def span_mask(start: torch.Tensor, end: torch.Tensor, width: int) -> torch.Tensor:
    """``[N, width]`` bool: True on positions ``start <= t < end`` of each row."""
    positions = torch.arange(width, device=start.device)[None, :]
    return (positions >= start[:, None]) & (positions < end[:, None])


class DumaHead(nn.Module):
    """Dual multi-head co-attention between passage and question+option, fused, scored."""

    def __init__(self, hidden: int, num_heads: int, dropout: float, initializer_range: float):
        super().__init__()
        self.passage_to_qa = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.qa_to_passage = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(2 * hidden, 1)
        init_linear(self.classifier, initializer_range)

    @staticmethod
    def _pool(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(states.dtype).unsqueeze(-1)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)

    def forward(self, hidden: torch.Tensor, passage: torch.Tensor, qa: torch.Tensor) -> torch.Tensor:
        """``hidden [N, T, H]``, ``passage`` / ``qa`` masks ``[N, T]`` -> one score per sequence ``[N]``."""
        # A row with an empty side would attend to nothing (NaN); give it its first token instead.
        passage_keys = passage.clone()
        passage_keys[~passage.any(dim=1), 0] = True
        qa_keys = qa.clone()
        qa_keys[~qa.any(dim=1), 0] = True
        from_passage, _ = self.passage_to_qa(hidden, hidden, hidden, key_padding_mask=~qa_keys, need_weights=False)
        from_qa, _ = self.qa_to_passage(hidden, hidden, hidden, key_padding_mask=~passage_keys, need_weights=False)
        fused = torch.cat([self._pool(from_passage, passage), self._pool(from_qa, qa)], dim=-1)
        return self.classifier(self.dropout(fused)).squeeze(-1)


class MultipleChoiceModel(nn.Module):
    task = "race"

    def __init__(self, encoder: nn.Module, head: str):
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"race heads are {HEADS}, got {head!r}")
        config = encoder.config
        self.encoder = encoder
        self.head_name = head
        dropout = getattr(config, "classifier_dropout", None)
        dropout = config.hidden_dropout_prob if dropout is None else dropout
        if head == "mc":
            if getattr(encoder, "pooler", None) is None:
                raise ValueError("the mc head reads the pooler output: load the encoder with its pooler")
            self.dropout = nn.Dropout(dropout)
            self.head = nn.Linear(config.hidden_size, 1)  # HF's BertForMultipleChoice.classifier
            init_linear(self.head, config.initializer_range)
        else:
            if getattr(encoder, "pooler", None) is not None:
                encoder.pooler.requires_grad_(False)  # unused by DUMA
            self.head = DumaHead(config.hidden_size, config.num_attention_heads, dropout, config.initializer_range)

    def forward(self, input_ids, attention_mask, token_type_ids=None, passage_start=None, passage_end=None,
                qa_start=None, qa_end=None, **extra):
        check_extra(extra)
        batch, choices, width = input_ids.shape
        flat = {"input_ids": input_ids.reshape(-1, width), "attention_mask": attention_mask.reshape(-1, width)}
        if token_type_ids is not None:
            flat["token_type_ids"] = token_type_ids.reshape(-1, width)
        output = self.encoder(**flat)
        with float32_region(input_ids.device.type):
            if self.head_name == "mc":
                scores = self.head(self.dropout(output.pooler_output.float())).squeeze(-1)
            else:
                if passage_start is None or qa_start is None:
                    raise ValueError("the duma head needs the passage and question+option spans (prep's columns)")
                passage = span_mask(passage_start.reshape(-1), passage_end.reshape(-1), width)
                qa = span_mask(qa_start.reshape(-1), qa_end.reshape(-1), width)
                scores = self.head(output.last_hidden_state.float(), passage, qa)
        return scores.reshape(batch, choices)


def build_model(head: str, encoder, data_info: dict | None = None) -> MultipleChoiceModel:
    return MultipleChoiceModel(encoder, head)


def loss(output, batch: dict) -> torch.Tensor:
    return F.cross_entropy(output.float(), batch["label"])


def eval_counts(output, batch: dict) -> dict:
    return {"accuracy": (output.argmax(dim=-1) == batch["label"]).sum()}


def pad_choices(column, pad_id: int, pad_to_multiple_of: int) -> tuple[torch.Tensor, np.ndarray]:
    """A ``list<list<int>>`` column of ``B`` rows x ``C`` sequences -> ``[B, C, T]`` int64 and lengths ``[B*C]``."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    choices = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(set(choices.tolist())) > 1:
        raise ValueError(f"rows hold different numbers of choices: {sorted(set(choices.tolist()))}")
    per_row = int(choices[0]) if len(choices) else NUM_CHOICES
    padded, lengths = pad_list_column(column.flatten(), pad_id, pad_to_multiple_of)
    return torch.from_numpy(padded).reshape(len(column), per_row, -1), lengths


def collate_race(rows: pa.Table, pad_id: int = 0, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Question rows -> ``input_ids``, ``attention_mask`` (and ``token_type_ids``) ``[B, 4, T]``, the spans
    ``[B, 4]``, ``feature_id`` and ``label`` ``[B]`` (when the rows have one)."""
    input_ids, lengths = pad_choices(rows.column("input_ids"), pad_id, pad_to_multiple_of)
    batch = {"input_ids": input_ids,
             "attention_mask": attention_mask_for(lengths, input_ids.shape[-1]).reshape(input_ids.shape),
             "feature_id": int_column(rows, "feature_id")}
    if "token_type_ids" in rows.column_names:
        batch["token_type_ids"] = pad_choices(rows.column("token_type_ids"), 0, pad_to_multiple_of)[0]
    for name in SPAN_KEYS:
        if name in rows.column_names:
            values = rows.column(name).combine_chunks().flatten().to_numpy(zero_copy_only=False)
            batch[name] = torch.from_numpy(values.astype(np.int64)).reshape(len(rows), -1)
    if "label" in rows.column_names:
        batch["label"] = int_column(rows, "label")
    return batch


def synthetic_race_table(rows: int, seed: int = 0, min_len: int = 10, max_len: int = 30) -> pa.Table:
    """Random questions whose right option's question+option holds the marker token (id 1000), BERT layout."""
    rng = np.random.default_rng(seed)
    columns = {name: [] for name in ("input_ids", "token_type_ids", *SPAN_KEYS, "label", "level")}
    for i in range(rows):
        passage = rng.integers(*_WORDS, size=int(rng.integers(min_len, max_len + 1))).tolist()
        label = int(rng.integers(0, NUM_CHOICES))
        sequences = []
        for choice in range(NUM_CHOICES):
            qa = rng.integers(*_WORDS, size=int(rng.integers(3, 9))).tolist()
            if choice == label:
                qa[int(rng.integers(0, len(qa)))] = MARKER_ID
            sequences.append((passage, qa))
        columns["input_ids"].append([[CLS_ID, *p, SEP_ID, *q, SEP_ID] for p, q in sequences])
        columns["token_type_ids"].append([[0] * (len(p) + 2) + [1] * (len(q) + 1) for p, q in sequences])
        columns["passage_start"].append([1] * NUM_CHOICES)
        columns["passage_end"].append([1 + len(p) for p, _ in sequences])
        columns["qa_start"].append([2 + len(p) for p, _ in sequences])
        columns["qa_end"].append([2 + len(p) + len(q) for p, q in sequences])
        columns["label"].append(label)
        columns["level"].append("middle" if i % 2 else "high")
    return pa.table({
        "feature_id": pa.array(np.arange(rows), pa.int64()),
        "example_id": pa.array([f"{columns['level'][i]}{i}-0" for i in range(rows)]),
        "example_index": pa.array(np.arange(rows), pa.int32()),
        "article_id": pa.array([f"{columns['level'][i]}{i}.txt" for i in range(rows)]),
        "level": pa.array(columns["level"]),
        "input_ids": pa.array(columns["input_ids"], pa.list_(pa.list_(pa.int32()))),
        "token_type_ids": pa.array(columns["token_type_ids"], pa.list_(pa.list_(pa.int8()))),
        **{name: pa.array(columns[name], pa.list_(pa.int32())) for name in SPAN_KEYS},
        "label": pa.array(columns["label"], pa.int8()),
        "passage_truncated": pa.array([False] * rows),
    })


def save_multiple_choice(model: MultipleChoiceModel, folder: str | Path) -> None:
    """``mc``: write ``AutoModelForMultipleChoice`` (encoder and classifier, both loaded strictly);
    ``duma``: the encoder alone (its head has no Hugging Face class; it is in head.safetensors)."""
    if model.head_name != "mc":
        model.encoder.save_pretrained(str(folder))
        return
    from transformers import AutoModelForMultipleChoice

    config = copy.deepcopy(model.encoder.config)
    hf_model = AutoModelForMultipleChoice.from_config(config)
    hf_model.base_model.load_state_dict(model.encoder.state_dict(), strict=True)
    hf_model.classifier.load_state_dict(model.head.state_dict(), strict=True)
    hf_model.save_pretrained(str(folder))
