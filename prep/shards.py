"""Prep split across workers: one input, K independent prep runs, read back as one data set.

    luigi --module pipeline GapFeatures --data gap-development --shards 4     # 4 shard tasks + their set

Shard ``k`` of ``K`` runs the task's own ``prepare`` inside :func:`prep_shard`: the reader reads
the whole input (cheap next to tokenizing it) and :func:`prep.stage.run_stage` converts only a
contiguous run of its chunks (``[n*k//K, n*(k+1)//K)`` of ``n``), so every task on the seam can
be sharded without a change to it. Each shard is an ordinary prep folder (a cached artifact any
Luigi worker can build); :func:`merge_shards` then writes a *set* folder holding only a manifest
whose ``files`` point at the shards' Arrow files (``../<shard folder>/<file>``) with each
shard's ``feature_id_offset``. :func:`prep.features.open_features` reads a set like any prep
output, so training and evaluation take it as one data set, the same rows and feature ids as a
single-task prep of the same input.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from prep.artifact import atomic_output_dir, read_manifest, write_json_atomic
from prep.folders import FeaturesFolder

_SHARD: contextvars.ContextVar["Shard | None"] = contextvars.ContextVar("prep_shard", default=None)
# What must be equal across the shards of one set (a shard of another input or config is an error).
_SAME = ("schema_version", "dataset", "split", "config", "tokenizer", "columns")


@dataclass(frozen=True)
class Shard:
    index: int
    count: int

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index} of {self.count}: need 0 <= shard < shards and shards >= 1")

    def chunk_range(self, chunks: int) -> tuple[int, int]:
        """The contiguous chunks ``[start, stop)`` this shard converts, out of ``chunks``."""
        return chunks * self.index // self.count, chunks * (self.index + 1) // self.count


@contextlib.contextmanager
def prep_shard(index: int, count: int) -> Iterator[Shard]:
    """Within the block, :func:`prep.stage.run_stage` builds shard ``index`` of ``count`` only.

    A context variable rather than a parameter: the tasks' ``prepare`` functions call run_stage
    with their own arguments and stay as they are.
    """
    token = _SHARD.set(Shard(index, count))
    try:
        yield _SHARD.get()
    finally:
        _SHARD.reset(token)


def current_shard() -> Shard | None:
    return _SHARD.get()


def select_chunks(shard: Shard, chunks: list, read_skipped: list) -> tuple[list, list, dict]:
    """(this shard's chunks, the reader's skips it reports, its manifest entry).

    Examples the reader skipped belong to no chunk: shard 0 reports them, so the set counts each once.
    """
    start, stop = shard.chunk_range(len(chunks))
    skipped = list(read_skipped) if shard.index == 0 else []
    return chunks[start:stop], skipped, {"index": shard.index, "count": shard.count, "chunks": [start, stop],
                                         "chunks_total": len(chunks), "read_skipped": len(skipped)}


def merge_shards(shard_dirs: list[Path], out_dir: Path) -> dict:
    """Write the set folder ``out_dir`` over finished shard folders (given in shard order); returns its manifest."""
    out_dir = Path(out_dir)
    manifests = [read_manifest(folder) for folder in shard_dirs]
    for folder, manifest in zip(shard_dirs, manifests):
        if "shard" not in manifest:
            raise ValueError(f"{folder}: not a prep shard (its task's prepare does not run prep.stage.run_stage?)")
    expected = [(i, len(shard_dirs)) for i in range(len(shard_dirs))]
    found = [(m["shard"]["index"], m["shard"]["count"]) for m in manifests]
    if found != expected:
        raise ValueError(f"shards {found} (index, count) given; need {expected}")
    first = manifests[0]
    for folder, manifest in zip(shard_dirs, manifests):
        if manifest["input"].get("sha256") != first["input"].get("sha256"):
            raise ValueError(f"{folder}: built from another input than {shard_dirs[0]}: not shards of one prep")
        different = [key for key in _SAME if manifest.get(key) != first.get(key)]
        if different:
            raise ValueError(f"{folder}: {', '.join(different)} differ from {shard_dirs[0]}'s: not shards of one prep")
    files, counts, skipped_read, skipped_convert, offset = [], {}, [], [], 0
    for folder, manifest in zip(shard_dirs, manifests):
        relative = os.path.relpath(Path(folder).resolve(), out_dir.resolve().parent)
        for entry in manifest["files"]:
            files.append({**entry, "path": f"../{relative}/{entry['path']}", "feature_id_offset": offset})
        offset += manifest["counts"]["features_out"]
        read = manifest["shard"]["read_skipped"]
        skipped_read += manifest["skipped"][:read]
        skipped_convert += manifest["skipped"][read:]
        for key, value in manifest["counts"].items():
            if key != "examples_in":
                counts[key] = counts.get(key, 0) + value
    examples_in = first["shard"]["input_examples_in"]
    if sum(m["counts"]["examples_in"] for m in manifests) != examples_in:
        raise ValueError(f"examples not conserved over the shards: the input has {examples_in}, the shards "
                         f"converted or skipped {[m['counts']['examples_in'] for m in manifests]}")
    skipped = skipped_read + skipped_convert
    manifest = {
        **{key: first[key] for key in _SAME},
        "input": merge_input_records([m["input"] for m in manifests], shard_dirs),
        "mode": "shards",
        "shards": [os.path.relpath(Path(folder).resolve(), out_dir.resolve().parent) for folder in shard_dirs],
        "files": files,
        "counts": {"examples_in": examples_in, **counts, "examples_skipped": len(skipped)},
        "skip_reasons": dict(Counter(entry["reason"] for entry in skipped)),
        "skipped": skipped,
        "seconds": round(sum(m["seconds"] for m in manifests), 3),
    }
    with atomic_output_dir(out_dir, reuse_if_made_while_waiting=True) as tmp:
        if tmp is None:
            return read_manifest(out_dir)
        write_json_atomic(FeaturesFolder(tmp).manifest, manifest)
    return manifest



def merge_input_records(records: list[dict], shard_dirs: list[Path]) -> dict:
    """The set's ``manifest["input"]``: what the reader found in the input, equal in every shard.

    A number that differs between shards counts the shard's own output (textclass records its
    windows there): the set's is the sum. Any other difference is an error.
    """
    merged = dict(records[0])
    for key in {key for record in records for key in record}:
        values = [record.get(key) for record in records]
        if all(value == values[0] for value in values):
            continue
        if all(isinstance(value, int) and not isinstance(value, bool) for value in values):
            merged[key] = sum(values)
            continue
        raise ValueError(f"the shards {', '.join(map(str, shard_dirs))} disagree on input[{key!r}]: {values}")
    return merged
