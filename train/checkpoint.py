"""Checkpoints: one dict, written atomically, read back with clear errors.

``OUT/checkpoints/last.pt`` holds::

    {"schema_version", "model", "optimizer", "scheduler", "scaler",
     "step", "epoch", "step_in_epoch",
     "rng": [per-rank RNG states, index = rank], "world_size", "config",
     "histories": JSON text {"train_loss": [...], "eval": [...]}}

``step`` counts optimizer steps done; ``epoch`` / ``step_in_epoch`` say where in the data the
run stands (``step_in_epoch`` optimizer steps of ``epoch`` are done). The batch plan is a pure
function of (seed, epoch, world size, batch sizes), so a resumed run rebuilds the epoch's plan
and skips ``step_in_epoch`` steps of it; with the model, optimizer, scheduler, grad scaler and
every rank's RNG restored it then computes what the unbroken run would have. ``histories`` (the
logged losses and evaluations so far) lets a resumed run's metrics.json cover the whole run; it is
optional, so older checkpoints still resume (with histories from the resume on).

The file is written to a temp name in the same folder, fsynced, and renamed over ``last.pt``
(a crash mid-write leaves the previous checkpoint intact). Everything in it loads with
``torch.load(weights_only=True)``: tensors, numbers, strings and containers only. A process
killed mid-write leaves its temp file (``.last.pt.tmp-<pid>``, as large as a checkpoint): a
resume (:func:`load_checkpoint`) deletes the temps of the checkpoints folder whose process is
gone, and so does every later write of the same file.

``OUT/checkpoints/best.pt`` (runs with ``select_best``) holds the weights of the epoch with the
lowest eval loss so far: ``{"schema_version", "model", "epoch", "step", "eval_loss"}``, written
the same way, so a resumed run still ends on the best epoch of the whole run.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from prep.artifact import atomic_file, remove_stale_temps
from prep.folders import RunFolder

SCHEMA_VERSION = 1
BEST_KEYS = ("schema_version", "model", "epoch", "step", "eval_loss")
REQUIRED_KEYS = (
    "schema_version", "model", "optimizer", "scheduler", "scaler", "step", "epoch",
    "step_in_epoch", "rng", "world_size", "config",
)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not belong to this run."""


def checkpoint_path(out_dir: str | Path) -> Path:
    """``RunFolder(out_dir).last_checkpoint``, for callers that hold only the folder's path."""
    return RunFolder(out_dir).last_checkpoint


def capture_rng_state(device: torch.device) -> dict:
    """This process's RNG states (Python, NumPy, torch CPU, and the current CUDA device)."""
    version, mt_state, gauss = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": (version, list(mt_state), gauss),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng_state(state: dict, device: torch.device) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_state = state["numpy"]
    np.random.set_state((
        "MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"],
        np_state["has_gauss"], np_state["cached_gaussian"],
    ))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _atomic_torch_save(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        torch.save(payload, tmp)


def save_checkpoint(path: str | Path, checkpoint: dict) -> None:
    """Write ``checkpoint`` to ``path`` atomically (temp file, fsync, rename, fsync the folder)."""
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise ValueError(f"checkpoint lacks {missing}")
    _atomic_torch_save(Path(path), checkpoint)


def save_best(path: str | Path, best: dict) -> None:
    """Write the best-epoch record (see the module docstring) atomically."""
    missing = [key for key in BEST_KEYS if key not in best]
    if missing:
        raise ValueError(f"best-epoch record lacks {missing}")
    _atomic_torch_save(Path(path), best)


def load_best(path: str | Path) -> dict | None:
    """The best-epoch record at ``path``, or None when there is none yet."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        best = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"--resume: {path} is corrupted or truncated ({type(err).__name__}: {err}); "
            "delete it (the run then selects among the epochs it evaluates from now on) or start over"
        ) from err
    if not isinstance(best, dict) or any(key not in best for key in BEST_KEYS) \
            or best["schema_version"] != SCHEMA_VERSION:
        raise CheckpointError(f"--resume: {path} is not a best-epoch record of this code's schema; delete it")
    return best


def load_checkpoint(path: str | Path) -> dict:
    """Read and validate a checkpoint; raises :class:`CheckpointError` with the reason and the fix.

    The temp files a killed writer left beside it (``.last.pt.tmp-<pid>``, ``.best.pt.tmp-<pid>``,
    their process gone) are deleted first: the run resuming from here is that folder's writer now.
    """
    path = Path(path)
    remove_stale_temps(path.parent)
    if not path.is_file():
        raise CheckpointError(
            f"--resume: no checkpoint at {path}; start without --resume, or point --out at the "
            "folder of the run to continue"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated zip, bad pickle, wrong magic...
        raise CheckpointError(
            f"--resume: checkpoint {path} is corrupted or truncated and cannot be read "
            f"({type(err).__name__}: {err}); delete it to start over"
        ) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"--resume: {path} does not hold a checkpoint dict (got {type(checkpoint).__name__})")
    missing = [key for key in REQUIRED_KEYS if key not in checkpoint]
    if missing:
        raise CheckpointError(f"--resume: {path} is not a bertflow checkpoint (missing {missing})")
    if checkpoint["schema_version"] != SCHEMA_VERSION:
        raise CheckpointError(
            f"--resume: {path} has schema_version {checkpoint['schema_version']}, this code "
            f"reads {SCHEMA_VERSION}; start the run over"
        )
    return checkpoint


def check_compatible(saved_config: dict, run_defining: dict, path: str | Path) -> None:
    """Raise unless the checkpoint's run-defining settings equal this run's."""
    differences = {
        name: (saved_config.get(name), value)
        for name, value in run_defining.items()
        if saved_config.get(name) != value
    }
    if differences:
        listed = ", ".join(f"{k}: checkpoint {a!r} vs now {b!r}" for k, (a, b) in differences.items())
        raise CheckpointError(f"--resume: {path} belongs to a different run ({listed})")
