"""Running a fine-tuned model over eval features: loading, checks, batching.

The model is what ``train.model.load_finetuned`` returns for the run's task. Tasks batch the
features with their own collate function (what training fed the model) over
:func:`length_batches` (rows sorted by length, so batches pad little) and put outputs back in
feature-id order.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.artifact import read_manifest
from prep.features import sorted_by_feature_id
from prep.folders import RunFolder
from prep.tokenizer import tokenizer_fingerprint
from tasks.spec import InputMismatchError  # noqa: F401 - raised here, defined on the seam for tasks too


def read_train_config(model_dir: str | Path) -> dict:
    path = RunFolder(model_dir).train_config
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir}: no {path.name}; --model takes the folder train wrote (--out)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: malformed JSON (line {err.lineno} column {err.colno}: {err.msg})") from None


def check_model_dir(model_dir: str | Path) -> Path:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"model folder not found: {model_dir}")
    run = RunFolder(model_dir)
    missing = [path.name for path in (run.model, run.head, run.train_config) if not path.exists()]
    if missing:
        raise FileNotFoundError(
            f"{model_dir}: missing {missing}; --model takes the folder train wrote ({run.MODEL}/, {run.HEAD}, "
            f"{run.TRAIN_CONFIG})"
        )
    _check_weight_files(model_dir)
    return model_dir


def _check_weight_files(model_dir: Path) -> None:
    """A truncated or corrupted .safetensors file is a ValueError naming it (safetensors' own
    error names no file and is not a ValueError). Reading the header checks the file's length."""
    from safetensors import SafetensorError, safe_open

    run = RunFolder(model_dir)
    for path in [*sorted(run.model.glob("*.safetensors")), run.head]:
        try:
            with safe_open(str(path), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{path}: truncated or corrupted safetensors file ({err})") from None


def load_model(model_dir: str | Path, spec, device: str = "cpu"):
    """``(model, train_config)`` from a training output folder, in eval mode on ``device``; ``spec``
    is the run's task's :class:`tasks.spec.TrainSpec`."""
    from train.model import load_finetuned  # torch-heavy; only the CLI path needs it

    model_dir = check_model_dir(model_dir)
    model, train_config = load_finetuned(model_dir, spec, device=device)
    model.eval()
    return model, train_config


def pad_id(model_dir: str | Path) -> int:
    """The padding id of the run's tokenizer (``model/``; 0 when it names none)."""
    from prep.tokenizer import load_fast_tokenizer

    pad = load_fast_tokenizer(RunFolder(model_dir).model).pad_token_id
    return int(pad) if pad is not None else 0


def check_inputs(model_dir: str | Path, features_dir: str | Path, spec, data_sha256: str | None) -> dict:
    """Check that model, features and data belong together; return the features manifest.

    Raises :class:`InputMismatchError` naming what differs: the features' dataset, the training
    task, the tokenizer fingerprint (features tokenized differently from what the model reads),
    or the data file the features were built from.
    """
    task = spec.name
    manifest = read_manifest(features_dir)
    if manifest.get("dataset") != task:
        raise InputMismatchError(f"{features_dir} holds {manifest.get('dataset')!r} features, not {task!r}")
    spec.eval.check_features(manifest, Path(features_dir))
    train_config = read_train_config(model_dir)
    if train_config.get("task") not in (None, task):
        raise InputMismatchError(f"{model_dir} was trained for {train_config.get('task')!r}, not {task!r}")
    model_tokenizer = RunFolder(model_dir).model
    model_fingerprint = tokenizer_fingerprint(model_tokenizer)
    features_fingerprint = (manifest.get("tokenizer") or {}).get("fingerprint")
    if features_fingerprint != model_fingerprint:
        raise InputMismatchError(
            f"tokenizer mismatch: {features_dir} was tokenized with {str(features_fingerprint)[:12]} "
            f"({(manifest.get('tokenizer') or {}).get('path')}), the model's tokenizer is "
            f"{model_fingerprint[:12]} ({model_tokenizer}); re-run prep with --tokenizer {model_tokenizer}"
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


def classifier_logits(output, what: str):
    """The logits tensor of a classifier's output: the tensor itself, the first of a tuple, or ``.logits``."""
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)):
        return output[0]
    if hasattr(output, "logits"):
        return output.logits
    raise TypeError(f"{what} must return logits, got {type(output).__name__}")


def length_batches(lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Row indices in batches of ``batch_size``, shortest rows first."""
    order = np.argsort(lengths, kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]




def tracked(batches: list, progress=None):
    """``batches`` one by one, calling ``progress(done, total)`` after each (long inputs report progress)."""
    for done, batch in enumerate(batches, start=1):
        yield batch
        if progress is not None:
            progress(done, len(batches))
