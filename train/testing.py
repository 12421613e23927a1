"""Small fixtures for tests and benchmarks: a tiny random BERT folder and synthetic feature folders.

Synthetic features follow docs/feature_schema.md (unpadded rows, manifest with
``schema_version``, ``dataset`` and ``config.max_seq_length``) and carry a learnable signal,
so a few optimizer steps visibly lower the loss:
- GAP: the pronoun token repeats the first token of the right name (label A or B), or is a
  fresh token (NEITHER).
- SQuAD: the answer starts at a marker token and spans three tokens.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from prep.artifact import MANIFEST, SCHEMA_VERSION, write_json_atomic
from train.model import TOKENIZER_FILES

TINY_BERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=512, type_vocab_size=2)
CLS_ID, SEP_ID = 101, 102
_MARKER_ID = 1000
_WORDS = (2000, 2999)  # plain word-piece ids of the BERT uncased vocab


def make_tiny_model_dir(out_dir: str | Path, tokenizer_dir: str | Path | None = None, seed: int = 0,
                        dropout: float = 0.1, **overrides) -> Path:
    """Save a randomly initialised tiny BertModel (+ the tokenizer files of ``tokenizer_dir``)."""
    import torch
    from transformers import BertConfig, BertModel

    from prep.tokenizer import default_model_dir

    out_dir = Path(out_dir)
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_model_dir()
    config = BertConfig(vocab_size=30522, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        **{**TINY_BERT, **overrides})
    torch.manual_seed(seed)
    BertModel(config, add_pooling_layer=False).save_pretrained(str(out_dir))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out_dir / name)
    return out_dir


def write_feature_dir(out_dir: str | Path, table: pa.Table, dataset: str, split: str, max_seq_length: int,
                      shards: int = 2) -> Path:
    """Write ``table`` as Arrow IPC shards plus a manifest that ``prep.features.open_features`` reads."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        name = f"{dataset}-{split}-w{i:03d}.arrow"
        with pa.OSFile(str(out_dir / name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table.slice(lo, hi - lo))
        files.append({"path": name, "rows": int(hi - lo)})
    write_json_atomic(out_dir / MANIFEST, {
        "schema_version": SCHEMA_VERSION, "dataset": dataset, "split": split,
        "config": {"max_seq_length": max_seq_length}, "columns": table.schema.names, "files": files,
        "counts": {"features_out": table.num_rows}, "tokenizer": {"path": "synthetic"},
    })
    return out_dir


def synthetic_gap_table(rows: int, seed: int = 0, min_len: int = 12, max_len: int = 48) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns = {k: [] for k in ("input_ids", "segment_ids", "p_start", "p_end", "a_start", "a_end",
                               "b_start", "b_end", "label")}
    for _ in range(rows):
        length = int(rng.integers(min_len, max_len + 1))
        ids = rng.integers(*_WORDS, size=length).tolist()
        ids[0], ids[-1] = CLS_ID, SEP_ID
        a, b, p = sorted(rng.choice(np.arange(1, length - 3), size=3, replace=False).tolist())
        a_end, b_end = a + 1 + (a + 1 < b) * int(rng.integers(0, 2)), b + 1
        label = int(rng.integers(0, 3))
        ids[p] = ids[a] if label == 0 else ids[b] if label == 1 else _MARKER_ID
        segments = [0] * length
        for start, end, kind in ((a, a_end, 2), (b, b_end, 3), (p, p + 1, 1)):
            segments[start:end] = [kind] * (end - start)
        for key, value in (("input_ids", ids), ("segment_ids", segments), ("p_start", p), ("p_end", p + 1),
                           ("a_start", a), ("a_end", a_end), ("b_start", b), ("b_end", b_end), ("label", label)):
            columns[key].append(value)
    return pa.table({
        "feature_id": pa.array(np.arange(rows), pa.int64()),
        "example_id": pa.array([f"synthetic-{i}" for i in range(rows)]),
        "example_index": pa.array(np.arange(rows), pa.int32()),
        "input_ids": pa.array(columns["input_ids"], pa.list_(pa.int32())),
        "segment_ids": pa.array(columns["segment_ids"], pa.list_(pa.int8())),
        **{k: pa.array(columns[k], pa.int32()) for k in ("p_start", "p_end", "a_start", "a_end", "b_start", "b_end")},
        "label": pa.array(columns["label"], pa.int8()),
        "gender": pa.array(["F"] * rows),
    })


def synthetic_squad_table(rows: int, seed: int = 0, min_len: int = 24, max_len: int = 96) -> pa.Table:
    rng = np.random.default_rng(seed)
    input_ids, token_types, starts, ends = [], [], [], []
    for _ in range(rows):
        length = int(rng.integers(min_len, max_len + 1))
        question = int(rng.integers(4, 9))
        ids = rng.integers(*_WORDS, size=length).tolist()
        ids[0], ids[question + 1], ids[-1] = CLS_ID, SEP_ID, SEP_ID
        start = int(rng.integers(question + 2, length - 4))
        ids[start] = _MARKER_ID
        input_ids.append(ids)
        token_types.append([0] * (question + 2) + [1] * (length - question - 2))
        starts.append(start)
        ends.append(start + 2)
    return pa.table({
        "feature_id": pa.array(np.arange(rows), pa.int64()),
        "example_id": pa.array([f"q{i}" for i in range(rows)]),
        "example_index": pa.array(np.arange(rows), pa.int32()),
        "input_ids": pa.array(input_ids, pa.list_(pa.int32())),
        "token_type_ids": pa.array(token_types, pa.list_(pa.int8())),
        "start_positions": pa.array(starts, pa.int32()),
        "end_positions": pa.array(ends, pa.int32()),
    })
