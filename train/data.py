"""Training data: memory-mapped prep features, per-rank batch plans, dynamic-padding collate.

Features are read with :func:`prep.features.open_features`, which memory-maps the Arrow files:
every rank (and every DataLoader worker) maps the same pages instead of holding its own copy.
A batch is a ``pyarrow.Table`` of rows taken from the map; the task's ``collate`` pads it to
its longest row (rounded up to ``pad_to_multiple_of``, with :func:`pad_list_column`) and returns
tensors. Evaluation builds its batches with the same functions.

Batch plan (``plan_epoch``): the order comes from ``DistributedSampler`` (``set_epoch`` each
epoch, same seed on every rank). Each epoch has ``len(dataset) // global_batch_size`` optimizer
steps on every rank; the tail that does not fill a global batch is dropped, so no rank ever sees
the sampler's padded duplicates and all ranks take the same number of steps (a rank with one
step more would wait forever in the all-reduce). Without bucketing, step ``s`` covers the
sampler positions ``[s * G, (s + 1) * G)`` whatever the world size, so world size 2 computes the
same global batches as world size 1.

Length bucketing (on by default, ``--no-bucketing`` switches it off) sorts each rank's rows by
length inside windows of ``bucket_window_steps`` optimizer steps, cuts the sorted window into
micro-batches, and shuffles the order of the window's steps with a generator seeded by
(seed, epoch, window) - the same on every rank, so the ranks still take equal numbers of steps
and, step by step, hold sequences of similar length (no rank waits on a longer batch).
Bucketing changes which rows share a step, so with it on, runs at different world sizes are
equally valid but not step-for-step identical.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from torch.utils.data import DataLoader, DistributedSampler

from prep.artifact import read_manifest
from prep.features import open_features

class FeatureSet:
    """A prep output folder as a map-style dataset whose items are rows of the memory-mapped table.

    ``dataset[indices]`` via ``__getitems__`` returns a ``pyarrow.Table`` (what the collate
    functions take). Pickling (DataLoader workers, spawn) sends only the folder path; the
    receiving process maps the files again.
    """

    def __init__(self, features_dir: str | Path, task: str | None = None):
        self.features_dir = Path(features_dir)
        self.manifest = read_manifest(self.features_dir)
        dataset = self.manifest.get("dataset")
        if task is not None and dataset is not None and dataset != task:
            raise ValueError(f"{self.features_dir} holds {dataset!r} features, not {task!r}")
        self.task = task or dataset
        self._table: pa.Table | None = None
        self._num_rows = sum(int(entry["rows"]) for entry in self.manifest["files"])

    @property
    def table(self) -> pa.Table:
        if self._table is None:
            self._table = open_features(self.features_dir)
        return self._table

    @property
    def max_seq_length(self) -> int | None:
        value = (self.manifest.get("config") or {}).get("max_seq_length")
        return int(value) if value is not None else None

    def lengths(self) -> np.ndarray:
        """Tokens per row (from the list offsets only; no token data is read)."""
        return pc.list_value_length(self.table.column("input_ids")).to_numpy().astype(np.int64)

    def __len__(self) -> int:
        return self._num_rows

    def __getitems__(self, indices) -> pa.Table:
        return self.table.take(pa.array(np.asarray(indices, dtype=np.int64)))

    def __getitem__(self, index: int) -> pa.Table:
        return self.__getitems__([index])

    def __getstate__(self):
        return {"features_dir": self.features_dir, "task": self.task}

    def __setstate__(self, state):
        self.__init__(state["features_dir"], state["task"])


def pad_list_column(column, pad_id: int = 0, pad_to_multiple_of: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A list column -> (int64 ``[rows, T]`` padded with ``pad_id``, lengths), T = longest row rounded up.

    Same result as :func:`prep.features.pad_rows` with the batch's longest length, without a
    Python loop over rows.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False).astype(np.int64)
    values = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
    rows = len(lengths)
    longest = int(lengths.max()) if rows else 0
    width = -(-max(longest, 1) // pad_to_multiple_of) * pad_to_multiple_of
    out = np.full((rows, width), pad_id, dtype=np.int64)
    row_index = np.repeat(np.arange(rows), lengths)
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if rows else lengths
    col_index = np.arange(len(values)) - np.repeat(starts, lengths)
    out[row_index, col_index] = values
    return out, lengths


def attention_mask_for(lengths: np.ndarray, width: int) -> torch.Tensor:
    """``[rows, width]`` int64: 1 on each row's first ``lengths[row]`` positions."""
    return torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))


def int_column(rows: pa.Table, name: str) -> torch.Tensor:
    return torch.from_numpy(rows.column(name).to_numpy().astype(np.int64))


def token_batch(rows: pa.Table, pad_id: int = 0, pad_to_multiple_of: int = 1,
                type_column: str = "token_type_ids") -> dict[str, torch.Tensor]:
    """The part of a batch every task shares: ``input_ids``, ``attention_mask`` and the rows' type
    column (``token_type_ids``, or GAP's ``segment_ids``) padded to ``[B, T]``, and ``feature_id``."""
    input_ids, lengths = pad_list_column(rows.column("input_ids"), pad_id, pad_to_multiple_of)
    types, _ = pad_list_column(rows.column(type_column), 0, pad_to_multiple_of)
    return {
        "input_ids": torch.from_numpy(input_ids),
        "attention_mask": attention_mask_for(lengths, input_ids.shape[1]),
        type_column: torch.from_numpy(types),
        "feature_id": int_column(rows, "feature_id"),
    }


def make_collate(spec, pad_id: int = 0, pad_to_multiple_of: int = 1) -> Callable[[pa.Table], dict]:
    """The collate function of the task whose training part is ``spec``, with the padding settings
    bound (picklable, for DataLoader workers)."""
    return functools.partial(spec.collate, pad_id=pad_id, pad_to_multiple_of=pad_to_multiple_of)


def steps_per_epoch(num_rows: int, global_batch_size: int) -> int:
    return num_rows // global_batch_size


def plan_epoch(
    dataset,
    *,
    epoch: int,
    seed: int,
    rank: int,
    world_size: int,
    global_batch_size: int,
    micro_batch_size: int,
    accumulation_steps: int,
    lengths: np.ndarray | None = None,
    bucket_window_steps: int = 50,
) -> list[list[int]]:
    """This rank's micro-batches for one epoch, ``steps_per_epoch * accumulation_steps`` of them.

    Micro-batch ``m`` belongs to optimizer step ``m // accumulation_steps``. Pass ``lengths``
    to bucket by length (see the module docstring); the plan is a pure function of its
    arguments, which is what lets a resumed run skip exactly the batches it already consumed.
    """
    per_rank_step = micro_batch_size * accumulation_steps
    if per_rank_step * world_size != global_batch_size:
        raise ValueError(
            f"micro {micro_batch_size} x accumulation {accumulation_steps} x world {world_size} "
            f"!= global batch {global_batch_size}"
        )
    sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=True, seed=seed, drop_last=False)
    sampler.set_epoch(epoch)
    steps = steps_per_epoch(len(dataset), global_batch_size)
    order = np.fromiter(iter(sampler), dtype=np.int64)[: steps * per_rank_step]
    if lengths is not None:
        window = bucket_window_steps * per_rank_step
        pieces = []
        for w, start in enumerate(range(0, len(order), window)):
            chunk = order[start : start + window]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            step_rows = chunk.reshape(-1, per_rank_step)
            generator = np.random.default_rng([seed, epoch, w])  # same on every rank
            pieces.append(step_rows[generator.permutation(len(step_rows))].reshape(-1))
        order = np.concatenate(pieces) if pieces else order
    return [order[i : i + micro_batch_size].tolist() for i in range(0, len(order), micro_batch_size)]


def make_loader(
    dataset: FeatureSet,
    micro_batches: list[list[int]],
    collate: Callable,
    num_workers: int = 0,
    pin_memory: bool = False,
) -> DataLoader:
    """A DataLoader over a fixed list of micro-batches (workers start with spawn: safe after CUDA)."""
    return DataLoader(
        dataset,
        batch_sampler=micro_batches,
        collate_fn=collate,
        num_workers=num_workers,
        pin_memory=pin_memory,
        multiprocessing_context="spawn" if num_workers > 0 else None,
        prefetch_factor=4 if num_workers > 0 else None,
        # Its own generator: creating an iterator must not draw from the global torch RNG, or a
        # resumed run's dropout stream would drift from the unbroken run's.
        generator=torch.Generator().manual_seed(0),
    )


def eval_batches(dataset: FeatureSet, batch_size: int, rank: int = 0, world_size: int = 1) -> list[list[int]]:
    """This rank's share of an eval set, each row exactly once over all ranks (no padded duplicates).

    Rows are taken ``rank::world_size`` and sorted by length so each batch pads little.
    """
    rows = np.arange(rank, len(dataset), world_size)
    rows = rows[np.argsort(dataset.lengths()[rows], kind="stable")]
    return [rows[i : i + batch_size].tolist() for i in range(0, len(rows), batch_size)]
