"""The Nsight Systems path: find ``nsys``, wrap the training command, read the reports back.

Each rank runs under its own ``nsys profile`` (torchrun starts ``nsys``, which starts the
worker), capturing only between ``cudaProfilerStart`` and ``cudaProfilerStop``; the worker's
:class:`CudaProfilerWindow` calls those around the steady-state steps and marks each step with
an NVTX ``ProfilerStep#N`` range (the name torch.profiler uses), next to the loop's own NVTX
ranges. Reports land in ``<artifact>/rank<R>.nsys-rep`` and open in the Nsight Systems UI;
``nsys stats`` writes CSV summaries (kernels, NVTX ranges, CUDA API, OS runtime) per rank and
exports the SQLite file the step-time split is read from.
"""

from __future__ import annotations

import csv
import glob
import io
import shutil
import sqlite3
import subprocess
from collections import Counter
from pathlib import Path

from profiling.timeline import RANGE_NAMES, STEP_PREFIX, RankTimeline

NSYS_TRACE = "cuda,nvtx,osrt,cublas,cudnn"
# Where CUDA toolkits and standalone Nsight Systems installs put nsys when it is not on PATH.
NSYS_SEARCH_GLOBS = ("/usr/local/cuda/bin/nsys", "/usr/local/cuda-*/bin/nsys",
                     "/opt/nvidia/nsight-systems/*/bin/nsys", "/usr/local/cuda*/nsight-systems-*/bin/nsys")
# Report names changed in nsys 2023.x (nvtxsum -> nvtx_sum, gpukernsum -> cuda_gpu_kern_sum).
STATS_REPORTS = {
    "cuda_gpu_kern_sum": ("cuda_gpu_kern_sum", "gpukernsum"),
    "nvtx_sum": ("nvtx_sum", "nvtx_pushpop_sum", "nvtxsum"),
    "cuda_api_sum": ("cuda_api_sum", "cudaapisum"),
    "osrt_sum": ("osrt_sum", "osrtsum"),
}


def find_nsys() -> str | None:
    """The nsys executable: on PATH, else in a usual install folder; None if there is none."""
    found = shutil.which("nsys")
    if found:
        return found
    for pattern in NSYS_SEARCH_GLOBS:
        for candidate in sorted(glob.glob(pattern), reverse=True):  # newest version first
            if Path(candidate).is_file():
                return candidate
    return None


def report_prefix(report_dir: str | Path) -> str:
    """nsys expands ``%q{RANK}`` to each process's RANK (set by torchrun) in the output name."""
    return f"{Path(report_dir)}/rank%q{{RANK}}"


def build_nsys_command(nsys: str, report_dir: str | Path, worker_command: list[str], world_size: int,
                       python: str) -> list[str]:
    """The argv that runs ``worker_command`` on ``world_size`` processes, each under its own nsys.

    One process: ``nsys profile ... <worker_command>`` (the caller sets RANK=0 so the report is
    ``rank0``). More: ``torchrun --no-python nsys profile ... <worker_command>``, so torchrun
    sets RANK/WORLD_SIZE/MASTER_* in each nsys, which passes them on to its worker.
    """
    profile = [nsys, "profile", "-t", NSYS_TRACE, "--capture-range=cudaProfilerApi", "--capture-range-end=stop",
               "-o", report_prefix(report_dir), *worker_command]
    if world_size == 1:
        return profile
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
            "--no-python", *profile]


class CudaProfilerWindow:
    """The loop's profiler object on the nsys path: capture steps ``warmup_steps+1 ..
    warmup_steps+active_steps`` (``cudaProfilerStart``/``Stop``), one NVTX range per step."""

    def __init__(self, warmup_steps: int, active_steps: int):
        if warmup_steps < 1 or active_steps < 1:
            raise ValueError(f"need warmup_steps >= 1 and active_steps >= 1, got {warmup_steps}, {active_steps}")
        self.warmup_steps, self.active_steps = warmup_steps, active_steps
        self.steps_done = 0
        self._in_step = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self._in_step:  # the run ended inside the window: close it so nsys still writes a report
            self._stop()
        return False

    def step(self) -> None:
        import torch

        self.steps_done += 1
        if self._in_step:
            torch.cuda.nvtx.range_pop()
            self._in_step = False
        if self.steps_done == self.warmup_steps:
            torch.cuda.synchronize()  # queued warm-up work must not leak into the window
            torch.cuda.profiler.start()
        if self.warmup_steps <= self.steps_done < self.warmup_steps + self.active_steps:
            torch.cuda.nvtx.range_push(f"{STEP_PREFIX}{self.steps_done}")
            self._in_step = True
        elif self.steps_done == self.warmup_steps + self.active_steps:
            self._stop()

    def _stop(self) -> None:
        import torch

        if self._in_step:
            torch.cuda.nvtx.range_pop()
            self._in_step = False
        torch.cuda.synchronize()
        torch.cuda.profiler.stop()


# --- after the run -------------------------------------------------------------------------------
def run_stats(nsys: str, report: Path, stats_dir: Path) -> dict[str, Path]:
    """``nsys stats`` CSVs for ``report`` (first name that this nsys knows, per report); also leaves
    ``<report>.sqlite`` next to it. Returns {report: csv path} for the ones that worked."""
    stats_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for report_name, aliases in STATS_REPORTS.items():
        for alias in aliases:
            scratch = stats_dir / f".{report.stem}-{alias}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            # --output is a prefix: nsys writes <prefix>_<report>.csv (the name differs a little
            # between versions, so take whatever CSV appears in the scratch folder).
            result = subprocess.run([nsys, "stats", "--report", alias, "--format", "csv", "--output",
                                     str(scratch / report.stem), str(report)], capture_output=True, text=True)
            produced = sorted(scratch.glob("*.csv"))
            table = extract_csv(produced[0].read_text(encoding="utf-8")) if produced else None
            shutil.rmtree(scratch, ignore_errors=True)
            if result.returncode == 0 and table is not None:
                path = stats_dir / f"{report.stem}_{report_name}.csv"
                path.write_text(table, encoding="utf-8")
                written[report_name] = path
                break
    return written


def extract_csv(text: str) -> str | None:
    """The CSV table in ``nsys stats`` output (progress lines may come first)."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith('"Time') or line.startswith("Time") or "Total Time" in line:
            return "\n".join(lines[i:]) + "\n"
    return None


def read_stats_csv(path: str | Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text(encoding="utf-8"))))


def _column(row: dict, *names: str):
    for name in names:
        if name in row:
            return row[name]
    raise KeyError(f"none of {names} in {sorted(row)}")


def top_kernels(kern_sum_csv: str | Path, k: int, steps: int) -> list[dict]:
    """The ``k`` GPU kernels with the most total time, from a ``cuda_gpu_kern_sum`` CSV."""
    rows = []
    for row in read_stats_csv(kern_sum_csv):
        total_ns = float(_column(row, "Total Time (ns)", "Total Time"))
        rows.append({"name": _column(row, "Name"), "calls": int(float(_column(row, "Instances", "Count"))),
                     "self_ms_total": total_ns * 1e-6, "self_ms_per_step": total_ns * 1e-6 / max(steps, 1),
                     "clock": "device"})
    rows.sort(key=lambda row: -row["self_ms_total"])
    return rows[:k]


def timeline_from_sqlite(path: str | Path, rank: int) -> RankTimeline:
    """Steps, NVTX ranges, kernels (attributed through their launch) and NCCL kernels from an
    ``nsys export``/``nsys stats`` SQLite file. Times are converted from ns to microseconds."""
    con = sqlite3.connect(str(path))
    try:
        tables = {row[0] for row in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        nvtx = con.execute(
            "SELECT n.start, n.end, n.globalTid, COALESCE(n.text, s.value) FROM NVTX_EVENTS AS n "
            "LEFT JOIN StringIds AS s ON n.textId = s.id WHERE n.end > n.start"
        ).fetchall() if "NVTX_EVENTS" in tables else []
        kernels = con.execute(
            "SELECT k.start, k.end, k.correlationId, s.value FROM CUPTI_ACTIVITY_KIND_KERNEL AS k "
            "LEFT JOIN StringIds AS s ON k.shortName = s.id"
        ).fetchall() if "CUPTI_ACTIVITY_KIND_KERNEL" in tables else []
        copies = []
        for table in ("CUPTI_ACTIVITY_KIND_MEMCPY", "CUPTI_ACTIVITY_KIND_MEMSET"):
            if table in tables:
                copies += con.execute(f"SELECT start, end, correlationId FROM {table}").fetchall()
        launches = dict(con.execute(
            "SELECT correlationId, start FROM CUPTI_ACTIVITY_KIND_RUNTIME").fetchall()
        ) if "CUPTI_ACTIVITY_KIND_RUNTIME" in tables else {}
    finally:
        con.close()
    us = 1e-3
    steps = [(s * us, e * us, tid) for s, e, tid, name in nvtx if name and name.startswith(STEP_PREFIX)]
    main_tid = steps[0][2] if steps else None
    ranges = {name: [] for name in RANGE_NAMES}
    for start, end, tid, name in nvtx:
        if name in ranges and tid == main_tid:
            ranges[name].append((start * us, end * us))
    comm, compute, comm_names = [], [], Counter()
    for start, end, correlation, name in kernels:
        if name and "nccl" in name.lower():
            comm.append((start * us, end * us))
            comm_names[name] += 1
        else:
            compute.append((start * us, end * us, launches.get(correlation, start) * us))
    for start, end, correlation in copies:
        compute.append((start * us, end * us, launches.get(correlation, start) * us))
    return RankTimeline(rank=rank, device="cuda", steps=sorted((s, e) for s, e, _ in steps), ranges=ranges,
                        compute=compute, comm=comm, comm_names=dict(comm_names), source=str(path))
