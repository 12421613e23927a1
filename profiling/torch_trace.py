"""The torch.profiler path: a profiler object for the loop, and reading its Chrome trace back.

Each rank writes ``traces/rank<R>.pt.trace.json``: a Chrome trace that opens in Perfetto
(ui.perfetto.dev) and chrome://tracing (TensorBoard's profiler plugin, which also reads the
``*.pt.trace.json`` name, is deprecated).
Next to it, ``ops_rank<R>.json`` holds the operator table (self time per operator over the window).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from profiling.timeline import RANGE_NAMES, STEP_PREFIX, RankTimeline

TRACE_SUFFIX = ".pt.trace.json"
_DEVICE_WORK = ("kernel", "gpu_memcpy", "gpu_memset")
_LAUNCHES = ("cuda_runtime", "cuda_driver")
# What a collective looks like in a torch 2.x trace: DDP's bucket all-reduce is the c10d op
# ``c10d::allreduce_`` plus a ``record_param_comms`` op on the launching thread, and the
# backend's own ``gloo:all_reduce`` / ``nccl:all_reduce`` range covering the work itself.
_COMM_MARKERS = ("gloo:", "nccl:", "c10d::", "record_param_comms", "allreduce", "all_reduce", "all_gather",
                 "allgather", "reduce_scatter", "broadcast")


def trace_path(trace_dir: str | Path, rank: int) -> Path:
    return Path(trace_dir) / f"rank{rank}{TRACE_SUFFIX}"


def ops_path(trace_dir: str | Path, rank: int) -> Path:
    return Path(trace_dir) / f"ops_rank{rank}.json"


def is_comm_name(name: str) -> bool:
    lowered = name.lower()
    return any(marker in lowered for marker in _COMM_MARKERS)


def make_torch_profiler(trace_dir: str | Path, rank: int, warmup_steps: int, active_steps: int, cuda: bool):
    """A ``torch.profiler.profile`` that skips ``warmup_steps`` steps and records the next
    ``active_steps``; the loop's ``profiler.step()`` drives it.

    The last skipped step is the profiler's own warm-up (tracing on, results dropped), as the
    torch docs recommend, so the recorded steps do not pay the tracer's start-up.
    """
    from torch.profiler import ProfilerActivity, profile, schedule

    if warmup_steps < 1 or active_steps < 1:
        raise ValueError(f"need warmup_steps >= 1 and active_steps >= 1, got {warmup_steps}, {active_steps}")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])

    def on_trace_ready(prof) -> None:
        Path(trace_dir).mkdir(parents=True, exist_ok=True)
        prof.export_chrome_trace(str(trace_path(trace_dir, rank)))
        write_op_table(prof, ops_path(trace_dir, rank), active_steps)

    return profile(
        activities=activities,
        schedule=schedule(wait=warmup_steps - 1, warmup=1, active=active_steps, repeat=1),
        on_trace_ready=on_trace_ready,
        record_shapes=False,
        with_stack=False,
        profile_memory=False,
    )


def write_op_table(prof, path: Path, steps: int) -> None:
    """Every operator's call count and total / self time over the window (microseconds)."""
    rows = []
    for event in prof.key_averages():
        self_device = getattr(event, "self_device_time_total", None)
        if self_device is None:
            self_device = getattr(event, "self_cuda_time_total", 0.0)
        rows.append({
            "name": event.key,
            "calls": int(event.count),
            "self_cpu_us": float(event.self_cpu_time_total),
            "cpu_total_us": float(event.cpu_time_total),
            "self_device_us": float(self_device or 0.0),
        })
    rows.sort(key=lambda row: -(row["self_device_us"] or row["self_cpu_us"]))
    path.write_text(json.dumps({"steps": steps, "ops": rows}, indent=1), encoding="utf-8")


def load_trace(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def timeline_from_trace(trace: dict, rank: int, source: str = "") -> RankTimeline:
    """Read steps, named ranges, compute and communication from a torch.profiler Chrome trace."""
    events = [e for e in trace.get("traceEvents", []) if e.get("ph") == "X" and "dur" in e]
    steps = [e for e in events if str(e.get("name", "")).startswith(STEP_PREFIX)
             and e.get("cat") != "gpu_user_annotation"]
    if not steps:
        return RankTimeline(rank, "cpu", [], {}, [], [], source=source)
    main = (steps[0]["pid"], steps[0]["tid"])

    def span(event) -> tuple[float, float]:
        start = float(event["ts"])
        return start, start + float(event["dur"])

    on_main = [e for e in events if (e.get("pid"), e.get("tid")) == main]
    ranges = {name: [] for name in RANGE_NAMES}
    for event in on_main:
        if event.get("name") in ranges and event.get("cat") == "user_annotation":
            ranges[event["name"]].append(span(event))
    device_work = [e for e in events if e.get("cat") in _DEVICE_WORK]
    comm_names: Counter = Counter()
    comm, compute = [], []
    if device_work:
        device = "cuda"
        launched_at = {e["args"]["correlation"]: float(e["ts"]) for e in events
                       if e.get("cat") in _LAUNCHES and "correlation" in e.get("args", {})}
        for event in device_work:
            start, end = span(event)
            if "nccl" in event["name"].lower():
                comm.append((start, end))
                comm_names[event["name"]] += 1
            else:
                launch = launched_at.get(event.get("args", {}).get("correlation"), start)
                compute.append((start, end, launch))
    else:
        device = "cpu"
        pid = main[0]
        for event in events:
            if event.get("pid") != pid or event.get("cat") not in ("cpu_op", "user_annotation"):
                continue
            name = str(event.get("name", ""))
            if is_comm_name(name):
                comm.append(span(event))
                comm_names[name] += 1
            elif event.get("cat") == "cpu_op" and event.get("tid") == main[1]:
                start, end = span(event)
                compute.append((start, end, start))
    return RankTimeline(rank=rank, device=device, steps=[span(e) for e in sorted(steps, key=lambda e: e["ts"])],
                        ranges=ranges, compute=compute, comm=comm, comm_names=dict(comm_names), source=source)


def top_ops(ops_file: str | Path, k: int) -> list[dict]:
    """The ``k`` operators with the most self time (device time on CUDA, CPU time otherwise)."""
    table = json.loads(Path(ops_file).read_text(encoding="utf-8"))
    steps = max(int(table.get("steps") or 1), 1)
    # The step marker and the loop's own ranges are not operators (their self time is the Python
    # between operators, already in the split); "ProfilerStep*" is key_averages' name for all steps.
    rows = [row for row in table["ops"] if not row["name"].startswith(STEP_PREFIX.rstrip("#"))
            and row["name"] not in RANGE_NAMES]
    on_device = any(row["self_device_us"] > 0 for row in rows)
    key = "self_device_us" if on_device else "self_cpu_us"
    rows.sort(key=lambda row: -row[key])
    return [{"name": row["name"], "calls": row["calls"], "self_ms_total": row[key] * 1e-3,
             "self_ms_per_step": row[key] * 1e-3 / steps, "clock": "device" if on_device else "cpu"}
            for row in rows[:k]]
