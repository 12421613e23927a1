"""Which GPUs a launch uses: the N with the least memory in use, read through NVML.

    python -m train.launch --gpus 2 -- --task gap --features DIR --out runs/gap

On a machine with more GPUs than processes (another job may hold some), the launcher asks NVML
(``nvidia-ml-py``, the ``pynvml`` module: no CUDA context is created, so this process stays
free to fork) for each GPU's memory in use, takes the ``count`` least used (ties: the lower
index), and sets ``CUDA_VISIBLE_DEVICES`` to them with ``CUDA_DEVICE_ORDER=PCI_BUS_ID``, the
order NVML numbers GPUs in (CUDA's default order, fastest first, can differ). A choice the user
made already (``CUDA_VISIBLE_DEVICES`` set) is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, MutableMapping

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
