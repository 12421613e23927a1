"""What the prep benchmarks share: one measurement per subprocess, the fastest of repeats kept."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]


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
