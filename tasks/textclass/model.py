"""The text classifier: the encoder's pooler output plus a linear head; its loss, batches and held-out counts.

``TextClassifier.forward(input_ids, attention_mask, token_type_ids=None) -> logits``
    ``input_ids, attention_mask, token_type_ids``: LongTensor ``[B, T]``, one row per window of
    a text (long texts are folded into several windows by prep). Returns float32 logits
    ``[B, num_labels]`` (``[B, 1]`` for regression), one row per window; evaluation folds a
    text's windows into one prediction. It also accepts (and ignores) the label and id keys a
    collated batch carries, so ``model(**batch)`` works.

The head is Hugging Face's ``BertForSequenceClassification`` head exactly: the encoder's pooler
output (``tanh(W h_[CLS] + b)``, so the encoder is loaded with its pooler) -> dropout ->
``Linear(hidden, num_labels)``. It runs in float32 even under autocast (tiny, and keeps the
loss out of fp16's range). The Linear (``model.head``) carries a ``temperature`` buffer (1
unless the run was calibrated, see :mod:`train.calibrate`); a classifier returns its logits
divided by it, a regressor ignores it.

:func:`save_sequence_classification` writes the model as ``AutoModelForSequenceClassification``
(the ``text-classification`` pipeline loads it) with the class names as ``id2label``; the
temperature is folded into the saved classifier's weights, so the exported model gives the same
(calibrated) logits as ours.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import pyarrow as pa
import torch
import torch.nn.functional as F
from torch import nn

from train.data import attention_mask_for, int_column, pad_list_column, token_batch
from train.model import check_extra, float32_region, init_linear

HEADS = ("linear",)
CLS_ID, SEP_ID = 101, 102
_MARKER_ID = 1000  # label k's marker is _MARKER_ID + k
_WORDS = (2000, 2999)  # plain word-piece ids of the BERT uncased vocab


class ClassifierHead(nn.Linear):
    """``Linear(hidden, num_labels)`` plus the calibration ``temperature`` buffer (saved in head.safetensors).

    A Linear itself rather than a module holding one, so its ``weight`` and ``bias`` are
    Hugging Face's ``classifier.weight`` / ``classifier.bias`` one-to-one.
    """

    def __init__(self, hidden: int, num_labels: int):
        super().__init__(hidden, num_labels)
        self.register_buffer("temperature", torch.ones(()))


class TextClassifier(nn.Module):
    task = "textclass"
    head_name = "linear"

    def __init__(self, encoder: nn.Module, num_labels: int, regression: bool, labels: Sequence[str] = ()):
        """``labels``: a name per output column (class names; a regressor's target name), for ``id2label``."""
        super().__init__()
        if getattr(encoder, "pooler", None) is None:
            raise ValueError("the text classifier reads the pooler output: load the encoder with its pooler "
                             "(train.model.load_encoder(..., pooler=True))")
        if regression and num_labels != 1:
            raise ValueError(f"a regressor has one output, got num_labels={num_labels}")
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        labels = tuple(str(name) for name in labels) or tuple(f"LABEL_{i}" for i in range(num_labels))
        if len(labels) != num_labels:
            raise ValueError(f"{len(labels)} label names for {num_labels} outputs")
        if len(set(labels)) != len(labels):
            raise ValueError(f"label names must be distinct, got {list(labels)}")
        config = encoder.config
        self.encoder = encoder
        self.num_labels = num_labels
        self.regression = regression
        self.labels = labels
        # HF's BertForSequenceClassification: classifier_dropout when set, else hidden_dropout_prob.
        dropout = getattr(config, "classifier_dropout", None)
        self.dropout = nn.Dropout(config.hidden_dropout_prob if dropout is None else dropout)
        self.head = ClassifierHead(config.hidden_size, num_labels)
        init_linear(self.head, config.initializer_range)

    def forward(self, input_ids, attention_mask, token_type_ids=None, **extra):
        check_extra(extra)
        pooled = self.encoder(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).pooler_output
        with float32_region(pooled.device.type):
            logits = self.head(self.dropout(pooled.float()))
            if self.regression:
                return logits
            return logits / self.head.temperature


def build_model(head: str, encoder, data_info: dict | None = None) -> TextClassifier:
    """The classifier on ``encoder`` (with its pooler), shaped by the training data's ``data_info``.

    ``data_info`` is the training features' ``manifest["input"]``: ``label_type`` "float" makes a
    regressor (one output, named by ``label_column``); otherwise ``labels`` (class names in id
    order) sets the outputs. Without it the number of classes is unknown, so that is an error,
    not a guess: a model with the wrong number of outputs would train and save silently.
    """
    if head not in HEADS:
        raise ValueError(f"textclass has one head, 'linear'; got {head!r}")
    data_info = data_info or {}
    if data_info.get("label_type") == "float":
        return TextClassifier(encoder, 1, regression=True, labels=(data_info.get("label_column") or "LABEL_0",))
    labels = data_info.get("labels") or []
    if not labels:
        raise ValueError("textclass needs the training data's labels to size its head: data_info (the "
                         f"features manifest's 'input' record) has no 'labels' (keys: {sorted(data_info)})")
    if len(labels) < 2:  # it would train to loss 0 and fail only at evaluation
        raise ValueError(f"textclass: the training features have one class only, {labels[0]!r} (column "
                         f"{data_info.get('label_column')!r}); a classifier needs two at least")
    return TextClassifier(encoder, len(labels), regression=False, labels=labels)


def loss(output, batch: dict) -> torch.Tensor:
    """Cross-entropy over the classes, or mean squared error for a regressor (``[B, 1]`` output)."""
    if batch["label"].is_floating_point():  # collate_textclass: float labels are a regressor's
        return F.mse_loss(output[:, 0].float(), batch["label"].float())
    return F.cross_entropy(output.float(), batch["label"])


def eval_counts(output, batch: dict) -> dict:
    """Windows whose class is right (``eval_accuracy``); none for a regressor (``eval_loss`` is its MSE)."""
    if batch["label"].is_floating_point():
        return {}
    return {"accuracy": (output.argmax(dim=-1) == batch["label"]).sum()}


def collate_textclass(rows: pa.Table, pad_id: int = 0, pad_to_multiple_of: int = 1) -> dict[str, torch.Tensor]:
    """Windows -> ``input_ids, attention_mask, token_type_ids`` ``[B, T]``, ``feature_id`` and ``label`` ``[B]``.

    ``token_type_ids`` only when the rows have that column (features from a tokenizer that returns them).

    ``label`` is long for classification and float32 for regression, following the column's
    type; it is left out when the rows have none.
    """
    if "token_type_ids" in rows.column_names:
        batch = token_batch(rows, pad_id, pad_to_multiple_of)
    else:  # a tokenizer without token types (RoBERTa, MPNet): the model gets none
        input_ids, lengths = pad_list_column(rows.column("input_ids"), pad_id, pad_to_multiple_of)
        batch = {"input_ids": torch.from_numpy(input_ids),
                 "attention_mask": attention_mask_for(lengths, input_ids.shape[1]),
                 "feature_id": int_column(rows, "feature_id")}
    if "label" in rows.column_names:
        if pa.types.is_floating(rows.schema.field("label").type):
            batch["label"] = torch.from_numpy(rows.column("label").to_numpy().astype(np.float32))
        else:
            batch["label"] = int_column(rows, "label")
    return batch


def synthetic_data_info(num_labels: int = 3, regression: bool = False) -> dict:
    """The ``data_info`` (manifest ``input`` record) of :func:`synthetic_textclass_table` with these settings."""
    return {
        "labels": [] if regression else list(range(num_labels)),
        "label_type": "float" if regression else "int",
        "text_column": "text", "label_column": "label", "text_pair_column": None, "format": "csv",
    }


def synthetic_textclass_table(rows: int, seed: int = 0, min_len: int = 12, max_len: int = 48,
                              num_labels: int = 3, regression: bool = False) -> pa.Table:
    """Random one-window texts, each holding its label's marker token (id ``1000 + label``) somewhere.

    Classification labels are int32 class ids; with ``regression`` the label is the class id as
    float32 (the same signal, as a number to fit).
    """
    rng = np.random.default_rng(seed)
    input_ids, labels = [], []
    for _ in range(rows):
        length = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(*_WORDS, size=length).tolist()
        ids[0], ids[-1] = CLS_ID, SEP_ID
        label = int(rng.integers(0, num_labels))
        ids[int(rng.integers(1, length - 1))] = _MARKER_ID + label
        input_ids.append(ids)
        labels.append(label)
    return pa.table({
        "feature_id": pa.array(np.arange(rows), pa.int64()),
        "example_id": pa.array([f"row-{i + 2}" for i in range(rows)]),  # CSV lines: 1 is the header
        "example_index": pa.array(np.arange(rows), pa.int32()),
        "input_ids": pa.array(input_ids, pa.list_(pa.int32())),
        "token_type_ids": pa.array([[0] * len(ids) for ids in input_ids], pa.list_(pa.int8())),
        "label": pa.array(labels, pa.float32() if regression else pa.int32()),
        "window_index": pa.array(np.zeros(rows), pa.int16()),
        "num_windows": pa.array(np.ones(rows), pa.int16()),
    })


# RoBERTa / MPNet style sequence classifiers: no pooler in the base model; the classification head
# is dense -> tanh -> out_proj on the first token, i.e. the encoder's pooler followed by our Linear.
_HEAD_DENSE = "classifier.dense."


def save_sequence_classification(model: TextClassifier, folder: str | Path) -> None:
    """Save ``model`` as ``AutoModelForSequenceClassification`` (``BertForSequenceClassification`` for BERT).

    Both state dicts load strictly, so no weight of the saved model is newly initialised on load.
    BERT-style (the base model has a pooler, ``classifier`` is a Linear): the encoder with its
    pooler, and our head as ``classifier``. RoBERTa / MPNet style (no pooler in the base model,
    ``classifier`` is dense + tanh + ``out_proj``): the pooler's dense becomes ``classifier.dense``
    (the same tanh follows it) and our head ``classifier.out_proj``; :func:`restore_pooler` puts it
    back when our own loader reads the folder. ``id2label`` / ``label2id`` are the model's label
    names. The temperature is folded into the last Linear (weight and bias divided by it), so the
    saved logits are ours, calibrated, with no extra module.
    """
    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.encoder.config)
    config.num_labels = model.num_labels
    config.id2label = dict(enumerate(model.labels))
    config.label2id = {name: i for i, name in enumerate(model.labels)}
    config.problem_type = "regression" if model.regression else "single_label_classification"
    hf_model = AutoModelForSequenceClassification.from_config(config)
    scale = 1.0 if model.regression else model.head.temperature.detach()
    last = {"weight": model.head.weight.detach() / scale, "bias": model.head.bias.detach() / scale}
    encoder_state = model.encoder.state_dict()
    if getattr(hf_model.base_model, "pooler", None) is None and hasattr(hf_model.classifier, "out_proj"):
        pooler = {key[len("pooler."):]: value for key, value in encoder_state.items() if key.startswith("pooler.")}
        if set(pooler) != {"dense.weight", "dense.bias"}:
            raise ValueError(f"a {config.model_type} encoder's pooler ({sorted(pooler)}) does not map onto "
                             f"{type(hf_model).__name__}'s classifier (dense, out_proj)")
        hf_model.base_model.load_state_dict(
            {key: value for key, value in encoder_state.items() if not key.startswith("pooler.")}, strict=True)
        hf_model.classifier.load_state_dict(
            {"dense.weight": pooler["dense.weight"], "dense.bias": pooler["dense.bias"],
             **{f"out_proj.{name}": value for name, value in last.items()}}, strict=True)
    else:
        hf_model.base_model.load_state_dict(encoder_state, strict=True)
        hf_model.classifier.load_state_dict(last, strict=True)
    hf_model.save_pretrained(str(folder))


def restore_pooler(encoder, folder: str | Path) -> None:
    """After ``load_encoder(folder, pooler=True)``: a RoBERTa / MPNet style export keeps the pooler's
    dense as ``classifier.dense`` (see :func:`save_sequence_classification`); copy it back into
    ``encoder.pooler``, which the loader could only initialise. A BERT-style folder, or one whose
    weights are not in safetensors files, is left alone."""
    from safetensors import safe_open

    folder = Path(folder)
    index = folder / "model.safetensors.index.json"
    files = (sorted({folder / name for name in json.loads(index.read_text(encoding="utf-8"))["weight_map"].values()})
             if index.is_file() else [folder / "model.safetensors"])
    found = {}
    for path in (path for path in files if path.is_file()):
        with safe_open(str(path), "pt") as weights:
            found.update({key[len(_HEAD_DENSE):]: weights.get_tensor(key)
                          for key in weights.keys() if key.startswith(_HEAD_DENSE)})
    if not found:
        return
    if getattr(encoder, "pooler", None) is None:
        raise ValueError(f"{folder}: its classifier holds the pooler's dense, but this encoder has no pooler")
    encoder.pooler.dense.load_state_dict(found, strict=True)


def classifier_train_spec():
    """The training part of this classifier's spec, for every task that trains it (textclass, glue)."""
    from tasks.spec import TrainSpec

    return TrainSpec(heads=HEADS, default_head="linear", build_model=build_model, collate=collate_textclass, loss=loss,
                     eval_counts=eval_counts, synthetic_features=synthetic_textclass_table,
                     synthetic_data_info=synthetic_data_info, calibratable=True, encoder_pooler=True,
                     save_pretrained=save_sequence_classification, restore_pretrained=restore_pooler)
