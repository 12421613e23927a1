"""What the benchmarks share: one measurement per subprocess, the fastest of repeats kept, and a
child process group under a time limit. Standard library only (bench/device_run.py runs before
its wheels are installed)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
KILL_GRACE_S = 10.0


def run_child(module: str, impl: str, input_path: Path, nproc: int, work: Path, *extra: str) -> dict:
    """``python -m <module> --child impl input nproc work result.json *extra`` in a fresh process;
    its result JSON with ``impl``, ``nproc`` and the whole process's wall time added."""
    result_file = work / "result.json"
    cmd = [sys.executable, "-m", module, "--child", impl, str(input_path), str(nproc), str(work), str(result_file),
           *extra]
    wall = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO)
    if done.returncode != 0:
        raise RuntimeError(f"{impl} nproc={nproc} failed with exit code {done.returncode}")
    result = json.loads(result_file.read_text())
    result.update(impl=impl, nproc=nproc, process_seconds=round(time.perf_counter() - wall, 2))
    return result


def fastest_of(repeats: int, scratch: Path, impl: str, nproc: int, run: Callable[[Path], dict]) -> tuple[dict, Path]:
    """``run(work)`` ``repeats`` times, each in a new folder under ``scratch``; the fastest result and its folder."""
    best = None
    for repeat in range(repeats):
        work = Path(scratch) / f"{impl}-{nproc}-{repeat}"
        work.mkdir()
        result = run(work)
        if best is None or result["seconds"] < best[0]["seconds"]:
            best = (result, work)
    return best


def run_group(command: list[str], timeout_s: float, stdout, env: dict | None = None) -> int | None:
    """Run ``command`` as the leader of its own process group, output to the file ``stdout``;
    its exit code, or None when it outlasted ``timeout_s`` (the whole group is then stopped:
    SIGTERM, SIGKILL ``KILL_GRACE_S`` later)."""
    from prep.stopping import start_process_group, stop_process_group  # standard library only

    process = start_process_group(command, stdout=stdout, stderr=subprocess.STDOUT, env=env)
    try:
        return process.wait(timeout=max(timeout_s, 0.1))
    except subprocess.TimeoutExpired:
        stop_process_group(process, KILL_GRACE_S)
        return None
