"""Starting a training run as a subprocess (what the Luigi task does).

The parent never imports CUDA state: the GPU count comes from a short-lived child process, so a
Luigi worker that forks later has not touched CUDA. World size 1 runs ``python -m train``;
more runs ``python -m torch.distributed.run --standalone --nproc-per-node N -m train`` (one
node; for several nodes run torchrun yourself with ``--nnodes/--node-rank/--rdzv-endpoint``).
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from prep.stopping import GRACE_S, start_process_group, stop_on_signals, stop_process_group

PROGRESS_FILE = "progress.json"


@functools.lru_cache(maxsize=1)
def visible_cuda_devices() -> int:
    """GPUs torch can see, counted in a child process (0 without CUDA)."""
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


def check_world_size(world_size: int, device: str = "auto") -> None:
    """Raise if ``world_size`` processes cannot each get a GPU on a CUDA machine."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if device == "cpu":
        return
    gpus = visible_cuda_devices()
    if device == "cuda" and gpus == 0:
        raise RuntimeError("device cuda requested but no GPU is visible")
    if gpus and world_size > gpus:
        raise RuntimeError(
            f"world_size {world_size} > {gpus} visible GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
            "use at most one process per GPU, or device cpu"
        )


def launch_command(train_args: list[str], world_size: int, python: str = sys.executable) -> list[str]:
    """The argv that runs ``python -m train *train_args`` on ``world_size`` local processes."""
    if world_size == 1:
        return [python, "-m", "train", *train_args]
    return [
        python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
        "-m", "train", *train_args,
    ]


def read_progress(out_dir: str | Path) -> dict | None:
    """The trainer's latest ``OUT/progress.json`` record, or None before the first (never raises)."""
    try:
        return json.loads((Path(out_dir) / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def train_argv(**options) -> list[str]:
    """``--flag value`` arguments for ``python -m train`` from keyword options.

    ``None`` leaves a flag out, ``True`` gives a bare switch, ``False`` leaves a switch out;
    underscores become dashes (``global_batch_size=32`` -> ``--global-batch-size 32``).
    """
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def run_logged(command: list[str], log_path: Path, what: str, env: dict | None = None,
               on_poll: Callable[[], None] | None = None, poll_seconds: float = 2.0,
               grace_s: float = GRACE_S) -> None:
    """Run ``command`` with its output appended to ``log_path``; raise with the log's tail on failure.

    ``on_poll`` is called every ``poll_seconds`` while it runs (progress reports). An interrupt
    (Ctrl-C, SIGTERM, SIGHUP) or error here stops the child's whole process group (SIGTERM, then
    SIGKILL after ``grace_s``) before it propagates, so no run is left orphaned.
    """
    with open(log_path, "ab") as log, stop_on_signals():
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        process = None
        try:
            process = start_process_group(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            while process.poll() is None:
                time.sleep(poll_seconds)
                if on_poll is not None:
                    on_poll()
        except BaseException:
            if process is not None:
                stop_process_group(process, grace_s)
            raise
    if process.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise RuntimeError(f"{what} exited with {process.returncode}; {log_path} ends with:\n" + "\n".join(tail))
