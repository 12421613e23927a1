"""Small fixtures for tests and benchmarks: tiny random encoder folders and feature folders from tables.

Each task's ``synthetic_features(rows, seed)`` makes a table that follows docs/feature_schema.md
and carries a learnable signal (a few optimizer steps visibly lower the loss);
:func:`write_feature_dir` turns it into a folder that ``prep.features.open_features`` reads.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from prep.artifact import SCHEMA_VERSION, write_json_atomic
from prep.folders import FeaturesFolder
from train.model import TOKENIZER_FILES

TINY_BERT = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 max_position_embeddings=512, type_vocab_size=2)


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


TINY_LAYERS = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def make_tiny_encoder_dir(out_dir: str | Path, tokenizer_dir: str | Path, model_type: str | None = None,
                          seed: int = 0, dropout: float = 0.1) -> Path:
    """Save a randomly initialised tiny encoder shaped like ``tokenizer_dir``'s ``config.json``.

    The folder's config (vocabulary, pad id, positions, e.g. all-mpnet-base-v2's from
    ../shared/models) is kept and shrunk to 2 layers of hidden 64; ``model_type`` builds another
    architecture on the same tokenizer (``"roberta"``: RoBERTa's layout with a token-type
    embedding of one row). The tokenizer files are copied next to the weights.
    """
    import json

    import torch
    from transformers import AutoConfig, AutoModel

    out_dir, tokenizer_dir = Path(out_dir), Path(tokenizer_dir)
    values = json.loads((tokenizer_dir / "config.json").read_text(encoding="utf-8"))
    values = {k: v for k, v in values.items() if not k.startswith("_") and k not in ("architectures", "model_type")}
    values.update(TINY_LAYERS, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    if model_type == "roberta":
        values["type_vocab_size"] = 1  # roberta-base's: one token type, all zeros
    config = AutoConfig.for_model(model_type or json.loads((tokenizer_dir / "config.json").read_text())["model_type"],
                                  **values)
    torch.manual_seed(seed)
    AutoModel.from_config(config).save_pretrained(str(out_dir))
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, out_dir / name)
    return out_dir


def write_feature_dir(out_dir: str | Path, table: pa.Table, dataset: str, split: str, max_seq_length: int,
                      shards: int = 2, input_info: dict | None = None) -> Path:
    """Write ``table`` as Arrow IPC shards plus a manifest that ``prep.features.open_features`` reads.

    ``input_info`` is the manifest's ``input`` record (what a task's ``build_model`` gets as ``data_info``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = []
    bounds = np.linspace(0, table.num_rows, shards + 1).astype(int)
    for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:])):
        name = FeaturesFolder.WORKER_FILE.format(stem=FeaturesFolder.STEM.format(dataset=dataset, split=split), worker=i)
        with pa.OSFile(str(out_dir / name), "wb") as sink, pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table.slice(lo, hi - lo))
        files.append({"path": name, "rows": int(hi - lo)})
    write_json_atomic(FeaturesFolder(out_dir).manifest, {
        "schema_version": SCHEMA_VERSION, "dataset": dataset, "split": split,
        "config": {"max_seq_length": max_seq_length}, "columns": table.schema.names, "files": files,
        "counts": {"features_out": table.num_rows}, "tokenizer": {"path": "synthetic"},
        "input": dict(input_info or {}),
    })
    return out_dir
