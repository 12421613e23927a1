"""Which GPUs a launch uses: the N with the least memory in use, read through NVML.

    python -m train.launch --gpus 2 -- --task gap --features DIR --out runs/gap

On a machine with more GPUs than processes (another job may hold some), the launcher asks NVML
(``nvidia-ml-py``, the ``pynvml`` module: no CUDA context is created, so this process stays
free to fork) for each GPU's memory in use, takes the ``count`` least used (ties: the lower
index), and sets ``CUDA_VISIBLE_DEVICES`` to them with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, the
order NVML numbers GPUs in (CUDA's default order, fastest first, can differ). A choice the user
made already (``CUDA_VISIBLE_DEVICES`` set) is kept. :func:`claimed_gpus` adds per-GPU lock files,
so that concurrent launches on one machine (two Luigi workers' trainings) take different GPUs.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, MutableMapping

MIB = 1 << 20


class GpuChoiceError(RuntimeError):
    """More GPUs asked for than there are, or no NVML to ask."""


class NvmlUnavailable(GpuChoiceError):
    """No NVIDIA driver (or bindings): a machine without GPUs to choose from."""


@dataclass(frozen=True)
class GpuInfo:
    index: int  # NVML's index (PCI bus order)
    name: str
    memory_used_bytes: int
    memory_total_bytes: int

    def describe(self) -> str:
        return (f"GPU {self.index} ({self.name}, {self.memory_used_bytes / MIB:,.0f} of "
                f"{self.memory_total_bytes / MIB:,.0f} MiB in use)")


def _load_nvml():
    try:
        import pynvml
    except ImportError as err:  # pragma: no cover - nvidia-ml-py is a dependency
        raise NvmlUnavailable(f"NVML bindings missing (pip install nvidia-ml-py): {err}") from None
    return pynvml


def list_gpus(nvml: Any = None) -> list[GpuInfo]:
    """Every GPU NVML sees, with its memory in use. Raises :class:`GpuChoiceError` without NVML
    (no NVIDIA driver): a CPU-only machine has no GPU to choose."""
    nvml = nvml or _load_nvml()
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as err:
        raise NvmlUnavailable(f"NVML is not available on this machine ({err}): no NVIDIA driver, hence no GPU") from None
    try:
        found = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            name = nvml.nvmlDeviceGetName(handle)
            found.append(GpuInfo(index, name.decode() if isinstance(name, bytes) else str(name),
                                 int(memory.used), int(memory.total)))
        return found
    finally:
        nvml.nvmlShutdown()


def choose_gpus(gpus: list[GpuInfo], count: int) -> list[GpuInfo]:
    """The ``count`` GPUs with the least memory in use (ties: lower index first), in index order."""
    if count < 1:
        raise GpuChoiceError(f"--gpus must be >= 1, got {count}")
    if count > len(gpus):
        raise GpuChoiceError(f"{count} GPU(s) asked for but this machine has {len(gpus)}"
                             + (": " + "; ".join(gpu.describe() for gpu in gpus) if gpus else ""))
    least_used = sorted(gpus, key=lambda gpu: (gpu.memory_used_bytes, gpu.index))[:count]
    return sorted(least_used, key=lambda gpu: gpu.index)


def select_gpus(count: int, environ: MutableMapping[str, str], nvml: Any = None) -> str:
    """Pick ``count`` GPUs into ``environ`` (``CUDA_VISIBLE_DEVICES``); returns the line that says which."""
    preset = environ.get("CUDA_VISIBLE_DEVICES")
    if preset is not None:
        visible = [entry for entry in preset.split(",") if entry.strip()]
        if len(visible) < count:
            raise GpuChoiceError(f"{count} GPU(s) asked for but CUDA_VISIBLE_DEVICES={preset!r} lists {len(visible)}")
        return f"GPUs: CUDA_VISIBLE_DEVICES={preset} was set already; kept"
    chosen = choose_gpus(list_gpus(nvml), count)
    environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu.index) for gpu in chosen)
    return (f"GPUs: chose {', '.join(gpu.describe() for gpu in chosen)} (least memory in use); "
            f"CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']}")


@contextmanager
def claimed_gpus(count: int, claims_dir: str | Path, environ: MutableMapping[str, str], nvml: Any = None,
                 poll_s: float = 2.0, say: Callable[[str], None] = print) -> Iterator[str]:
    """Hold ``count`` GPUs of this machine for one launch, so that concurrent launches (two Luigi
    workers' trainings) never share one; yields the line that says which.

    Each GPU has a lock file ``<claims_dir>/<host>-gpu<index>.lock``; the least used free GPUs
    (by memory, as :func:`choose_gpus`) are locked with ``flock`` and set in ``environ`` as in
    :func:`select_gpus`, and released when the block ends (or the process dies: the kernel drops
    the locks). While fewer than ``count`` are free, it waits. A ``CUDA_VISIBLE_DEVICES`` set
    already is the user's choice: kept, nothing claimed.
    """
    if environ.get("CUDA_VISIBLE_DEVICES") is not None:
        yield select_gpus(count, environ, nvml)
        return
    claims_dir = Path(claims_dir)
    claims_dir.mkdir(parents=True, exist_ok=True)
    host = socket.gethostname()
    waited = False
    while True:
        gpus = list_gpus(nvml)
        choose_gpus(gpus, count)  # raises when the machine has fewer than count
        held = []
        for gpu in sorted(gpus, key=lambda gpu: (gpu.memory_used_bytes, gpu.index)):
            fd = os.open(claims_dir / f"{host}-gpu{gpu.index}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held.append((gpu, fd))
            if len(held) == count:
                break
        if len(held) == count:
            break
        for _, fd in held:
            os.close(fd)  # closing drops the lock
        if not waited:
            say(f"GPUs: waiting for {count} of {len(gpus)} to be free of other launches (claims in {claims_dir})")
            waited = True
        time.sleep(poll_s)
    try:
        chosen = sorted((gpu for gpu, _ in held), key=lambda gpu: gpu.index)
        environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
        environ["CUDA_VISIBLE_DEVICES"] = ",".join(str(gpu.index) for gpu in chosen)
        yield (f"GPUs: claimed {', '.join(gpu.describe() for gpu in chosen)}; "
               f"CUDA_VISIBLE_DEVICES={environ['CUDA_VISIBLE_DEVICES']}")
    finally:
        for _, fd in held:
            os.close(fd)
