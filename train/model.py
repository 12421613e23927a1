"""BERT encoder + task heads: SQuAD span head and the three GAP heads; saving and loading.

Forward signatures (what :func:`load_finetuned` returns is one of these two modules):

``SquadModel.forward(input_ids, attention_mask, token_type_ids=None) -> (start_logits, end_logits)``
    ``input_ids, attention_mask, token_type_ids``: LongTensor ``[B, T]``. Returns two float32
    ``[B, T]`` tensors; positions where ``attention_mask == 0`` hold ``finfo(float32).min`` so
    padding never wins a softmax or an argmax and the loss does not depend on how far a batch
    was padded.

``GapModel.forward(input_ids, attention_mask, token_type_ids=None, *, p_start, p_end, a_start, a_end, b_start, b_end, segment_ids=None) -> logits``
    ``input_ids, attention_mask`` ``[B, T]``; the six bounds are LongTensor ``[B]`` sub-token
    spans with exclusive ends (the GAP feature columns); ``segment_ids`` ``[B, T]`` (1 = P,
    2 = A, 3 = B, 0 elsewhere) is required by the segmentation head and ignored by the others.
    Returns float32 ``[B, 3]`` logits for the classes (A, B, NEITHER) = labels (0, 1, 2).

Both also accept (and ignore) the label and id keys a collated batch carries (``feature_id``,
``label``, ``start_positions``, ``end_positions``), so ``model(**batch)`` works.

Heads (seed write-up 000; a mention's vector is the **mean of its sub-tokens' last hidden
states** over ``[start, end)``, where the write-up took the first sub-token):
- ``concat``: ``Linear(3H, 3)`` over ``[P; A; B]``.
- ``multiply`` (default): P attends over A, B and a learned NEITHER key: query
  ``q = W_q P``, keys ``W_k A``, ``W_k B`` and a learned vector ``n``; logits are
  ``(q.k_A, q.k_B, q.n) / sqrt(H)``.
- ``segment``: token types 1/2/3 mark P/A/B (``segment_ids``); ``Linear(H, 3)`` on ``[CLS]``.
  The type embedding grows to 4 rows: row 0 keeps the pretrained row 0 (as the write-up says);
  rows 1-3 start at pretrained row 0 plus N(0, initializer_range) noise. The write-up's rows
  1-3 were purely random, which moves every P/A/B token off the distribution the encoder was
  trained on (its probable cause of that head's poor score); anchoring them on row 0 keeps
  those tokens in-distribution while the noise lets the three types tell themselves apart.
  The resized encoder (``type_vocab_size`` 4) is what gets saved in ``OUT/model``.

Every GAP head carries a ``temperature`` buffer (1 unless the run was calibrated, see
:mod:`train.calibrate`): ``GapModel`` returns the head's logits divided by it, so a saved,
calibrated model gives calibrated probabilities wherever it is loaded.

Heads run in float32 even under autocast (they are tiny; keeps the dot products and the loss
out of fp16's range problems). The encoder is loaded without its pooler, so every parameter
gets a gradient each step and DDP needs no ``find_unused_parameters``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

SEGMENT_TYPE_VOCAB = 4
HEAD_FILE = "head.safetensors"
MODEL_SUBDIR = "model"
TRAIN_CONFIG_FILE = "train_config.json"
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json", "added_tokens.json",
)
_IGNORED_KEYS = frozenset({"feature_id", "label", "start_positions", "end_positions", "example_index"})


def _check_extra(extra: dict) -> None:
    unknown = set(extra) - _IGNORED_KEYS
    if unknown:
        raise TypeError(f"unexpected forward arguments: {sorted(unknown)}")


def mean_pool_spans(hidden: torch.Tensor, start: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden[b, start[b]:end[b]]`` for each row b -> ``[B, H]`` (an empty span counts as 1 token)."""
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    mask = (positions[None, :] >= start[:, None]) & (positions[None, :] < end[:, None])
    mask = mask.to(hidden.dtype)
    summed = torch.bmm(mask.unsqueeze(1), hidden).squeeze(1)
    return summed / mask.sum(dim=1, keepdim=True).clamp_min(1.0)


_AUTOCAST_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_context(precision: str, device: torch.device):
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def _float32_region(device_type: str):
    return torch.autocast(device_type=device_type, enabled=False)


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


class SquadModel(nn.Module):
    task = "squad"
    head_name = "span"

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, 2)
        _init_linear(self.head, encoder.config.initializer_range)

    def forward(self, input_ids, attention_mask, token_type_ids=None, **extra):
        _check_extra(extra)
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        with _float32_region(hidden.device.type):
            logits = self.head(hidden.float())  # [B, T, 2]
            logits = logits.masked_fill((attention_mask == 0).unsqueeze(-1), torch.finfo(torch.float32).min)
        start_logits, end_logits = logits.unbind(dim=-1)
        return start_logits.contiguous(), end_logits.contiguous()


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
                _init_linear(module, config.initializer_range)

    def forward(self, input_ids, attention_mask, token_type_ids=None, *, p_start, p_end, a_start, a_end,
                b_start, b_end, segment_ids=None, **extra):
        _check_extra(extra)
        if self.head_name == "segment":
            if segment_ids is None:
                raise ValueError("the segmentation head needs segment_ids")
            token_type_ids = segment_ids
        hidden = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).last_hidden_state
        with _float32_region(hidden.device.type):
            hidden = hidden.float()
            p = mean_pool_spans(hidden, p_start, p_end)
            a = mean_pool_spans(hidden, a_start, a_end)
            b = mean_pool_spans(hidden, b_start, b_end)
            return self.head(p, a, b, hidden[:, 0]) / self.head.temperature


def _init_linear(module: nn.Linear, std: float) -> None:
    nn.init.normal_(module.weight, mean=0.0, std=std)
    nn.init.zeros_(module.bias)


def squad_loss(start_logits, end_logits, start_positions, end_positions) -> torch.Tensor:
    """Mean of the start and end cross-entropies (Hugging Face's BertForQuestionAnswering loss)."""
    return (F.cross_entropy(start_logits.float(), start_positions)
            + F.cross_entropy(end_logits.float(), end_positions)) / 2


def gap_loss(logits, label) -> torch.Tensor:
    return F.cross_entropy(logits.float(), label)


def compute_loss(model_output, batch: dict) -> torch.Tensor:
    if isinstance(model_output, tuple):
        return squad_loss(*model_output, batch["start_positions"], batch["end_positions"])
    return gap_loss(model_output, batch["label"])


@contextlib.contextmanager
def _quiet_transformers():
    """No load report (the dropped pooler is expected) and no per-shard progress bars."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_encoder(model_dir: str | Path):
    """A BertModel (no pooler, float32, SDPA attention) from a local folder."""
    from transformers import BertModel

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"{model_dir}: not a model folder (no config.json)")
    with _quiet_transformers():
        return BertModel.from_pretrained(
            str(model_dir), add_pooling_layer=False, dtype=torch.float32,
            attn_implementation="sdpa", local_files_only=True,
        )


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


def assemble_model(task: str, head: str, encoder) -> nn.Module:
    if task == "squad":
        return SquadModel(encoder)
    return GapModel(encoder, head)


def build_model(task: str, head: str, model_dir: str | Path) -> nn.Module:
    """A model to fine-tune: the pretrained encoder from ``model_dir`` plus a fresh head.

    Call under a fixed seed: the new head (and the segment head's new type rows) draw from the
    global torch generator.
    """
    encoder = load_encoder(model_dir)
    if task == "gap" and head == "segment":
        resize_token_types(encoder)
    return assemble_model(task, head, encoder)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module inside a DDP wrapper (or the module itself)."""
    return getattr(model, "module", model)


def save_finetuned(model: nn.Module, out_dir: str | Path, source_model_dir: str | Path) -> None:
    """Write ``OUT/model/`` (encoder safetensors + config + tokenizer files) and ``OUT/head.safetensors``.

    Both land atomically: the model folder is written beside its destination and renamed.
    """
    from safetensors.torch import save_file

    model = unwrap(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{MODEL_SUBDIR}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    with _quiet_transformers():
        model.encoder.save_pretrained(str(tmp))
    for name in TOKENIZER_FILES:
        source = Path(source_model_dir) / name
        if source.is_file():
            shutil.copyfile(source, tmp / name)
    final = out_dir / MODEL_SUBDIR
    if final.exists():
        trash = out_dir / f".{MODEL_SUBDIR}.old-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    head_state = {k: v.detach().cpu().contiguous() for k, v in model.head.state_dict().items()}
    head_tmp = out_dir / f".{HEAD_FILE}.tmp-{os.getpid()}"
    save_file(head_state, str(head_tmp), metadata={"task": model.task, "head": model.head_name})
    os.replace(head_tmp, out_dir / HEAD_FILE)


def load_finetuned(out_dir: str | Path, device: str | torch.device = "cpu"):
    """``(model, train_config_dict)`` from a finished training output folder, in eval mode on ``device``.

    The model is a :class:`SquadModel` or :class:`GapModel` (forward signatures in this module's
    docstring); ``train_config_dict`` is ``OUT/train_config.json`` (task, head, model source,
    features dir, max_seq_length, ...).
    """
    from safetensors.torch import load_file

    out_dir = Path(out_dir)
    config_path = out_dir / TRAIN_CONFIG_FILE
    for path in (config_path, out_dir / MODEL_SUBDIR / "config.json", out_dir / HEAD_FILE):
        if not path.is_file():
            raise FileNotFoundError(f"{out_dir}: not a finished training output ({path.name} missing)")
    train_config = json.loads(config_path.read_text(encoding="utf-8"))
    encoder = load_encoder(out_dir / MODEL_SUBDIR)
    model = assemble_model(train_config["task"], train_config["head"], encoder)
    head_state = load_file(str(out_dir / HEAD_FILE))
    if isinstance(model.head, GapHead):
        head_state.setdefault("temperature", torch.ones(()))  # heads saved before calibration existed
    model.head.load_state_dict(head_state, strict=True)
    return model.to(device).eval(), train_config
