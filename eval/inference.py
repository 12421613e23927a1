"""Running a fine-tuned model over eval features: loading, checks, batched forward passes.

The model is any callable with train's contract (``train.model.load_finetuned``):
``model(input_ids, attention_mask, token_type_ids=None, **gap_inputs)`` returns
``(start_logits, end_logits)`` ``[B, T]`` for SQuAD and logits ``[B, 3]`` (A, B, NEITHER) for
GAP. Batches are built with train's own collate functions (dynamic padding to the longest row),
so evaluation feeds the model exactly what training did. Rows are sorted by length into batches
and the outputs put back in feature-id order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from prep.artifact import read_manifest
from prep.features import sorted_by_feature_id
from prep.tokenizer import tokenizer_fingerprint

GAP_INPUTS = ("segment_ids", "p_start", "p_end", "a_start", "a_end", "b_start", "b_end")
MODEL_DIR_FILES = ("model", "head.safetensors", "train_config.json")


class InputMismatchError(ValueError):
    """Model, features and data do not belong together (task, tokenizer, source file)."""


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {device!r} requested but CUDA is not available")
    return device


def read_train_config(model_dir: str | Path) -> dict:
    path = Path(model_dir) / "train_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: no train_config.json; --model takes the folder train wrote (--out)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON (line {err.lineno} column {err.colno}: {err.msg})") from None


def check_model_dir(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    missing = [name for name in MODEL_DIR_FILES if not (model_dir / name).exists()]
    if missing:
        raise FileNotFoundError(
            f"{model_dir}: missing {missing}; --model takes the folder train wrote (model/, head.safetensors, "
            "train_config.json)"
        )
    _check_weight_files(model_dir)
    return model_dir


def _check_weight_files(model_dir: Path) -> None:
    """A truncated or corrupted .safetensors file is a ValueError naming it (safetensors' own
    error names no file and is not a ValueError). Reading the header checks the file's length."""
    from safetensors import SafetensorError, safe_open

    for path in [*sorted((model_dir / "model").glob("*.safetensors")), model_dir / "head.safetensors"]:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: truncated or corrupted safetensors file ({err})") from None


def load_model(model_dir: str | Path, device: str = "cpu"):
    """``(model, train_config)`` from a training output folder, in eval mode on ``device``."""
    from train.model import load_finetuned  # torch-heavy; only the CLI path needs it

    model_dir = check_model_dir(model_dir)
    model, train_config = load_finetuned(model_dir, device=device)
    model.eval()
    return model, train_config


def check_inputs(model_dir: str | Path, features_dir: str | Path, task: str, data_sha256: str | None) -> dict:
    """Check that model, features and data belong together; return the features manifest.

    Raises :class:`InputMismatchError` naming what differs: the features' dataset, the training
    task, the tokenizer fingerprint (features tokenized differently from what the model reads),
    or the data file the features were built from.
    """
    manifest = read_manifest(features_dir)
    if manifest.get("dataset") != task:
        raise InputMismatchError(f"{features_dir} holds {manifest.get('dataset')!r} features, not {task!r}")
    if task == "squad" and manifest.get("split", "eval") != "eval":
        raise InputMismatchError(
            f"{features_dir} holds the {manifest.get('split')!r} split; evaluation needs features built with "
            "--split eval (they carry the offset mapping)"
        )
    train_config = read_train_config(model_dir)
    if train_config.get("task") not in (None, task):
        raise InputMismatchError(f"{model_dir} was trained for {train_config.get('task')!r}, not {task!r}")
    model_fingerprint = tokenizer_fingerprint(Path(model_dir) / "model")
    features_fingerprint = (manifest.get("tokenizer") or {}).get("fingerprint")
    if features_fingerprint != model_fingerprint:
        raise InputMismatchError(
            f"tokenizer mismatch: {features_dir} was tokenized with {str(features_fingerprint)[:12]} "
            f"({(manifest.get('tokenizer') or {}).get('path')}), the model's tokenizer is "
            f"{model_fingerprint[:12]} ({Path(model_dir) / 'model'}); re-run prep with --tokenizer {Path(model_dir) / 'model'}"
        )
    features_input = (manifest.get("input") or {}).get("sha256")
    if data_sha256 is not None and features_input is not None and features_input != data_sha256:
        raise InputMismatchError(
            f"{features_dir} was built from {manifest['input'].get('path')} (sha256 {features_input[:12]}), "
            f"not from the --data file given (sha256 {data_sha256[:12]})"
        )
    return manifest


def ordered_table(table: pa.Table) -> pa.Table:
    """The features in feature-id order, checked dense (row i is feature i)."""
    table = sorted_by_feature_id(table)
    ids = table.column("feature_id").to_numpy()
    if len(ids) == 0:
        raise ValueError("the features table is empty")
    if not np.array_equal(ids, np.arange(len(ids))):
        raise ValueError("feature ids are not dense 0..N-1; not a complete prep output")
    return table


def row_lengths(table: pa.Table) -> np.ndarray:
    return pc.list_value_length(table.column("input_ids")).to_numpy(zero_copy_only=False).astype(np.int64)


def _batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _squad_outputs(output):
    if isinstance(output, (tuple, list)):
        return output[0], output[1]
    if hasattr(output, "start_logits"):
        return output.start_logits, output.end_logits
    raise TypeError(f"a SQuAD model must return (start_logits, end_logits), got {type(output).__name__}")


def _gap_outputs(output):
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    if hasattr(output, "logits"):
        return output.logits
    raise TypeError(f"a GAP model must return logits [B, 3], got {type(output).__name__}")


@torch.inference_mode()
def squad_logits(model, table: pa.Table, batch_size: int, device: str = "cpu", pad_id: int = 0):
    """Per-feature ``(start_logits, end_logits)`` lists (float32, cut to each row's length)."""
    from train.data import collate_squad

    lengths = row_lengths(table)
    starts: list = [None] * len(lengths)
    ends: list = [None] * len(lengths)
    for rows in _batches(lengths, batch_size):
        batch = collate_squad(table.take(pa.array(rows)), pad_id=pad_id)
        start, end = _squad_outputs(model(
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            token_type_ids=batch["token_type_ids"].to(device),
        ))
        start = start.float().cpu().numpy()
        end = end.float().cpu().numpy()
        if start.shape[0] != len(rows) or end.shape != start.shape:
            raise ValueError(f"model returned logits {start.shape}/{end.shape} for a batch of {len(rows)}")
        for k, row in enumerate(rows):
            starts[row] = start[k, : lengths[row]].copy()
            ends[row] = end[k, : lengths[row]].copy()
    return starts, ends


@torch.inference_mode()
def gap_probabilities(model, table: pa.Table, batch_size: int, device: str = "cpu", pad_id: int = 0) -> np.ndarray:
    """Per-feature softmax probabilities ``[N, 3]`` (A, B, NEITHER), float64."""
    from train.data import collate_gap

    lengths = row_lengths(table)
    probs = np.zeros((len(lengths), 3), dtype=np.float64)
    for rows in _batches(lengths, batch_size):
        batch = collate_gap(table.take(pa.array(rows)), pad_id=pad_id)
        logits = _gap_outputs(model(
            batch["input_ids"].to(device),
            batch["attention_mask"].to(device),
            token_type_ids=None,
            **{name: batch[name].to(device) for name in GAP_INPUTS},
        ))
        if tuple(logits.shape) != (len(rows), 3):
            raise ValueError(f"model returned logits {tuple(logits.shape)} for a batch of {len(rows)}; expected [B, 3]")
        probs[rows] = torch.softmax(logits.double(), dim=-1).cpu().numpy()
    return probs


def squad_offsets(table: pa.Table) -> list[np.ndarray]:
    """The ``offset_mapping`` column as one int array ``[T, 2]`` per feature (-1 where null)."""
    if "offset_mapping" not in table.column_names:
        raise ValueError("the SQuAD features have no offset_mapping: evaluate the eval split (prep --split eval)")
    column = table.column("offset_mapping")
    items = pc.list_flatten(column)
    valid = items.is_valid().to_numpy(zero_copy_only=False)
    pairs = np.full((len(valid), 2), -1, dtype=np.int64)
    pairs[valid] = pc.list_flatten(items).to_numpy(zero_copy_only=False).reshape(-1, 2)
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.split(pairs, np.cumsum(lengths)[:-1])
