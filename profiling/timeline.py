"""One rank's profiled steps as intervals, and where their time went.

Both back-ends (a torch.profiler Chrome trace, an Nsight Systems SQLite export) are read into a
:class:`RankTimeline`; :func:`split_step_time` then gives every instant of the profiled steps to
exactly one category, so the shares sum to 1:

1. **compute** running: the range that launched it (``forward``, ``backward``,
   ``optimizer_step``, ``data_wait``; ``other`` for work launched outside them). Compute is the
   device's own work: GPU kernels and copies on CUDA (attributed through their launch's
   correlation id), the training thread's operators on CPU.
2. else **communication** running (NCCL kernels on CUDA; gloo/c10d collectives on CPU): the
   *exposed* communication, the part that compute did not hide.
3. else the named range the training thread is in (e.g. ``data_wait`` while the GPU idles
   waiting for a batch, or the Python between operators of ``forward``).
4. else ``other`` (logging, the scheduler step, the profiler's own step marker).

Communication is also reported whole: its busy time per step (the "all-reduce is ~10% of a
step" number), the fraction of it overlapped by compute, and the fraction that falls inside the
forward/backward ranges.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from profiling.intervals import Interval, intersect, merge, peel, total

RANGE_NAMES = ("data_wait", "forward", "backward", "optimizer_step")
CATEGORIES = ("data_wait", "forward", "backward", "optimizer_step", "communication", "other")
STEP_PREFIX = "ProfilerStep#"  # torch.profiler's per-step range; the nsys window uses the same name


@dataclass
class RankTimeline:
    """Times in microseconds, on one clock per rank."""

    rank: int
    device: str  # "cpu" or "cuda"
    steps: list[Interval]
    ranges: dict[str, list[Interval]]  # the named ranges on the training thread
    compute: list[tuple[float, float, float]]  # (start, end, launch time)
    comm: list[Interval]
    comm_names: dict[str, int] = field(default_factory=dict)  # what was counted as communication
    source: str = ""

    def label_at(self, when: float) -> str:
        """The named range that contains ``when``, or ``other``."""
        for name in RANGE_NAMES:
            spans = self._merged(name)
            i = bisect.bisect_right(spans, (when, float("inf"))) - 1
            if i >= 0 and spans[i][0] <= when < spans[i][1]:
                return name
        return "other"

    def _merged(self, name: str) -> list[Interval]:
        cache = self.__dict__.setdefault("_merged_cache", {})
        if name not in cache:
            cache[name] = merge(self.ranges.get(name, ()))
        return cache[name]


def split_step_time(timeline: RankTimeline) -> dict:
    """Per-step time of one rank, its split into :data:`CATEGORIES`, and communication overlap."""
    if not timeline.steps:
        raise ValueError(f"rank {timeline.rank}: no profiled steps ({STEP_PREFIX}N ranges) in {timeline.source}")
    window = merge(timeline.steps)
    wall = total(window)
    steps = len(timeline.steps)
    compute_by_label: dict[str, list[Interval]] = {name: [] for name in (*RANGE_NAMES, "other")}
    for start, end, launched in timeline.compute:
        compute_by_label[timeline.label_at(launched)].append((start, end))
    comm = intersect(timeline.comm, window)
    layers = [(name, spans) for name, spans in compute_by_label.items()]
    layers.append(("communication", comm))
    layers += [(name, timeline.ranges.get(name, ())) for name in RANGE_NAMES]
    seconds = peel(window, layers)
    compute = merge(span for spans in compute_by_label.values() for span in spans)
    comm_busy = total(comm)
    forward_backward = merge([*timeline.ranges.get("forward", ()), *timeline.ranges.get("backward", ())])
    ms = 1e-3 / steps  # microseconds over the window -> milliseconds per step
    return {
        "rank": timeline.rank,
        "device": timeline.device,
        "steps": steps,
        "step_ms": wall * ms,
        "step_ms_each": [round((end - start) * 1e-3, 3) for start, end in timeline.steps],
        "split_ms": {name: seconds.get(name, 0.0) * ms for name in CATEGORIES},
        "shares": {name: seconds.get(name, 0.0) / wall if wall else 0.0 for name in CATEGORIES},
        "ranges_ms": {name: total(intersect(timeline.ranges.get(name, ()), window)) * ms for name in RANGE_NAMES},
        "compute_busy_ms": total(intersect(compute, window)) * ms,
        "communication": {
            "busy_ms": comm_busy * ms,
            "share_of_step": comm_busy / wall if wall else 0.0,
            "exposed_ms": seconds.get("communication", 0.0) * ms,
            "overlap_with_compute": total(intersect(comm, compute)) / comm_busy if comm_busy else None,
            "overlap_with_forward_backward": (total(intersect(comm, forward_backward)) / comm_busy
                                              if comm_busy else None),
            "events": dict(sorted(timeline.comm_names.items(), key=lambda kv: -kv[1])),
        },
    }


def mean_over_ranks(per_rank: list[dict]) -> dict:
    """Averages of the per-rank numbers (ranks run the same steps in lockstep under DDP)."""
    n = len(per_rank)

    def avg(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    comm = [r["communication"] for r in per_rank]
    return {
        "ranks": n,
        "step_ms": avg(r["step_ms"] for r in per_rank),
        "split_ms": {c: avg(r["split_ms"][c] for r in per_rank) for c in CATEGORIES},
        "shares": {c: avg(r["shares"][c] for r in per_rank) for c in CATEGORIES},
        "communication": {
            key: avg(c[key] for c in comm)
            for key in ("busy_ms", "share_of_step", "exposed_ms", "overlap_with_compute",
                        "overlap_with_forward_backward")
        },
    }
