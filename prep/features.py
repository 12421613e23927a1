"""Reading prep outputs: memory-mapped Arrow tables, and padding rows into model batches.

Rows are stored unpadded (variable-length lists); ``attention_mask`` is 1 over a row's length.
:func:`pad_rows` pads to a fixed length (the parity check against padding="max_length") or to
the longest row of a batch (dynamic padding in training).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from prep.artifact import read_manifest


def to_hf_dataset(out_dir: str | Path):
    """A prep output as a Hugging Face ``datasets.Dataset`` over the same memory-mapped table.

    The one-line loader (``datasets`` is the bench extra, not a core dependency)::

        datasets.Dataset(datasets.table.InMemoryTable(prep.features.open_features(out_dir)))

    ``InMemoryTable`` only wraps the table, so no row is copied.
    """
    import datasets

    return datasets.Dataset(datasets.table.InMemoryTable(open_features(out_dir)))


def open_features(out_dir: str | Path) -> pa.Table:
    """All feature rows of a prep output as one memory-mapped table (no copy into RAM).

    Shards are concatenated in manifest order; processes that open the same folder share the
    page cache instead of each holding a copy. A shard set (prep.shards) lists its shards' files
    with the ``feature_id_offset`` that makes their ids those of a single prep of the input.
    """
    out_dir = Path(out_dir)
    manifest = read_manifest(out_dir)
    tables = []
    for entry in manifest["files"]:
        path = out_dir / entry["path"]
        try:
            table = pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()
        except pa.ArrowInvalid as err:  # pyarrow's message does not say which file
            raise ValueError(f"{path}: not a readable Arrow IPC file, truncated or corrupted? ({err})") from None
        if table.num_rows != entry["rows"]:
            raise ValueError(f"{path}: {table.num_rows} rows, manifest says {entry['rows']}")
        offset = int(entry.get("feature_id_offset", 0))
        if offset:  # one int64 column computed; the token columns stay memory-mapped
            ids = table.schema.get_field_index("feature_id")
            table = table.set_column(ids, "feature_id", pc.add(table.column(ids), pa.scalar(offset, pa.int64())))
        tables.append(table)
    if not tables:
        raise ValueError(f"{out_dir}: manifest lists no feature files")
    return pa.concat_tables(tables)


def sorted_by_feature_id(table: pa.Table) -> pa.Table:
    """The table in feature-id order (a copy; for comparisons and eval, not for training)."""
    return table.take(pc.sort_indices(table, [("feature_id", "ascending")]))


def pad_rows(rows: list[list[int]], length: int, pad_id: int = 0) -> np.ndarray:
    """Stack variable-length rows into an int64 ``[len(rows), length]`` array padded with pad_id."""
    out = np.full((len(rows), length), pad_id, dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row) > length:
            raise ValueError(f"row {i} has {len(row)} tokens > pad length {length}")
        out[i, : len(row)] = row
    return out


def attention_mask(rows: list[list[int]], length: int) -> np.ndarray:
    mask = np.zeros((len(rows), length), dtype=np.int64)
    for i, row in enumerate(rows):
        mask[i, : len(row)] = 1
    return mask
