"""bench/gpu_check.sh on a machine without a usable GPU: it stops at once, says why, writes nothing.

(Its CUDA path needs a GPU, which CI does not have; docs/scaling.md says it is untested.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "bench" / "gpu_check.sh"


def tools(tmp_path: Path) -> Path:
    """A PATH folder with the tools the script uses and no nvidia-smi, whatever this machine has."""
    folder = tmp_path / "tools"
    if not folder.is_dir():
        folder.mkdir()
        for name in ("bash", "env", "dirname", "head", "wc", "mkdir", "timeout"):
            (folder / name).symlink_to(shutil.which(name))
    return folder


def run_check(tmp_path: Path, path_dirs: list[Path]) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PATH": os.pathsep.join(map(str, [*path_dirs, tools(tmp_path)])), "PYTHON": sys.executable}
    started = time.monotonic()
    done = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "out")], env=env, capture_output=True, text=True, timeout=120)
    return done, time.monotonic() - started


def fake_nvidia_smi(folder: Path, body: str) -> Path:
    folder.mkdir()
    tool = folder / "nvidia-smi"
    tool.write_text(f"#!/bin/sh\n{body}\n")
    tool.chmod(0o755)
    return folder


@pytest.mark.fast
def test_without_a_driver_it_stops_at_once(tmp_path):
    done, seconds = run_check(tmp_path, [])
    assert done.returncode == 3
    assert done.stderr.strip() == ("bench/gpu_check.sh: no NVIDIA driver here (nvidia-smi not found); nothing was run "
                                   "(this check needs an NVIDIA GPU)")
    assert seconds < 5 and not (tmp_path / "out").exists()


def test_a_driver_without_a_gpu_or_a_cuda_torch_stops_too(tmp_path):
    broken = fake_nvidia_smi(tmp_path / "broken", 'echo "NVIDIA-SMI has failed because it could not communicate '
                                                  'with the NVIDIA driver."; exit 9')
    done, _ = run_check(tmp_path, [broken])
    assert done.returncode == 3 and "nvidia-smi found no GPU (NVIDIA-SMI has failed" in done.stderr
    # A GPU the driver lists, but this torch cannot use it (the CPU wheel installed here)
    listed = fake_nvidia_smi(tmp_path / "listed", 'echo "NVIDIA H100 80GB HBM3"')
    done, _ = run_check(tmp_path, [listed])
    assert done.returncode == 3, done.stderr
    assert "torch cannot use the GPU (NVIDIA H100 80GB HBM3): CUDA build none, cuda.is_available() False" in done.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.fast
def test_usage():
    done = subprocess.run([str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.strip() == "usage: bench/gpu_check.sh OUTDIR [python -m bench.gpu_check options]"
