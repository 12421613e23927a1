"""Interval arithmetic on sorted, disjoint ``(start, end)`` lists: the whole of the step-time split.

Every function takes lists of intervals in any order (overlapping allowed) and returns a merged
list (sorted, disjoint, non-empty intervals), so results compose freely.
"""

from __future__ import annotations

from typing import Iterable

Interval = tuple[float, float]


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """The union of ``intervals`` as sorted, disjoint intervals (empty ones dropped)."""
    out: list[Interval] = []
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def total(intervals: Iterable[Interval]) -> float:
    """Length of the union of ``intervals``."""
    return sum(end - start for start, end in merge(intervals))


def intersect(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    a, b = merge(a), merge(b)
    out, i, j = [], 0, 0
    while i < len(a) and j < len(b):
        start, end = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if end > start:
            out.append((start, end))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return out


def subtract(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """The parts of ``a`` not covered by ``b``."""
    a, b = merge(a), merge(b)
    out, j = [], 0
    for start, end in a:
        while j < len(b) and b[j][1] <= start:
            j += 1
        k, cursor = j, start
        while k < len(b) and b[k][0] < end:
            if b[k][0] > cursor:
                out.append((cursor, b[k][0]))
            cursor = max(cursor, b[k][1])
            k += 1
        if cursor < end:
            out.append((cursor, end))
    return out


def peel(window: Iterable[Interval], layers: Iterable[tuple[str, Iterable[Interval]]],
         rest: str = "other") -> dict[str, float]:
    """Give every instant of ``window`` to the first layer that covers it, the rest to ``rest``.

    ``layers`` are ``(label, intervals)`` in priority order; a label may appear more than once
    (its times add up). The values sum to ``total(window)`` exactly, up to rounding.
    """
    remaining = merge(window)
    out: dict[str, float] = {}
    for label, intervals in layers:
        taken = intersect(remaining, intervals)
        out[label] = out.get(label, 0.0) + total(taken)
        remaining = subtract(remaining, taken)
    out[rest] = out.get(rest, 0.0) + total(remaining)
    return out
