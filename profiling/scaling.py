"""DDP scaling: the same N optimizer steps (same global batch) at world size 1 and N, timed.

The seeds' tables compare epoch times: two processes took 61% of the single-process time with
NCCL and 75% with gloo (``000_0bbb1a4af31322e5.txt``). This module measures the same ratio on
the machine at hand, from the trainer's own ``metrics.json`` (its ``throughput.train_seconds``
excludes each process's first step, eval and checkpoints), without a profiler attached. A size
that the machine cannot run (two NCCL ranks on one GPU) is reported as not measured, with the
reason, never estimated.
"""

from __future__ import annotations


def scaling_table(timings: list[dict]) -> list[dict]:
    """Speed-up, efficiency and time ratio against world size 1.

    ``timings``: one dict per world size with ``world_size`` and either ``seconds`` and ``steps``
    (the timed steps) or ``skipped`` (the reason it was not measured); other keys are kept.
    """
    rows = [dict(t) for t in sorted(timings, key=lambda t: t["world_size"])]
    base = next((r for r in rows if r["world_size"] == 1 and r.get("seconds")), None)
    for row in rows:
        if not row.get("seconds") or not row.get("steps"):
            row.update(step_seconds=None, speedup=None, efficiency=None, time_vs_single=None)
            continue
        row["step_seconds"] = row["seconds"] / row["steps"]
        if base is None:
            row.update(speedup=None, efficiency=None, time_vs_single=None)
            continue
        speedup = base["step_seconds"] / row["step_seconds"] if row is not base else 1.0
        row["speedup"] = speedup
        row["efficiency"] = speedup / row["world_size"]
        row["time_vs_single"] = 1.0 / speedup
    return rows


def timing_from_metrics(metrics: dict, world_size: int, **extra) -> dict:
    """A ``scaling_table`` input row from a ``python -m train`` metrics.json."""
    throughput = metrics["throughput"]
    return {"world_size": world_size, "seconds": throughput["train_seconds"], "steps": throughput["steps"],
            "sequences_per_second": throughput["sequences_per_second"], "precision": metrics.get("precision"),
            **extra}


def skip_reason(world_size: int, device_type: str, gpus: int) -> str | None:
    """Why ``world_size`` processes cannot be timed here, or None if they can."""
    if device_type == "cuda" and world_size > gpus:
        return (f"not measured: {gpus} GPU(s) visible and NCCL needs one GPU per rank, so world size "
                f"{world_size} cannot run here; NCCL scaling needs a machine with >= {world_size} GPUs "
                "(not simulated)")
    return None
