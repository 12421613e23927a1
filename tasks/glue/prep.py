"""A GLUE TSV -> one feature per sentence (pair) in Arrow, laid out by the model's own tokenizer.

    python -m prep glue ../shared/data/glue/RTE/train.tsv runs/glue-rte-train --glue-task rte
    python -m prep glue glue_data/STS-B/dev.tsv runs/glue-stsb-dev --glue-task stsb --model-dir DIR

Each example is ``tokenizer(text, text_pair, truncation=True, max_length=max_seq_length)``, the
call Hugging Face's run_glue makes: the tokenizer decides the layout (``[CLS] a [SEP] b [SEP]``
for BERT, ``<s> a </s></s> b </s>`` for RoBERTa / MPNet) and the truncation (longest first).
``token_type_ids`` are a column only when the tokenizer returns them (its
``model_input_names``). Rows use textclass's feature columns (one window per example), so the
text classifier trains and scores them; class ids are positions in the task's fixed label set.
A test file (``prepare_glue(..., labelled=False)``, for predictions: index column, sentences, no
label) is read by :func:`tasks.glue.read.read_glue_test`; its labels are -1 (STS-B: NaN).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from prep.stage import ReadResult, run_stage
from prep.tokenizer import default_model_dir, load_fast_tokenizer
from tasks.glue.benchmark import TASKS, parse_tasks
from tasks.glue.read import read_glue, read_glue_test
from tasks.textclass.prep import FEATURES_SCHEMA, NO_LABEL, REGRESSION_SCHEMA, split_name
from tasks.textclass.read import TextExample


@dataclass(frozen=True)
class GluePrepConfig:
    glue_task: str = field(default="", metadata={"help": "the GLUE task the file belongs to (cola, sst2, mrpc, ...)"})
    max_seq_length: int = field(default=128, metadata={"help": "tokens per example, special tokens included"})

    def __post_init__(self):
        if not self.glue_task:
            raise ValueError("glue_task is required (one of the GLUE tasks: cola, sst2, mrpc, stsb, ...)")
        if parse_tasks([self.glue_task]) != [self.glue_task]:
            raise ValueError(f"glue_task must be written in lower case, got {self.glue_task!r}")
        if self.max_seq_length < 8:
            raise ValueError(f"max_seq_length must be >= 8, got {self.max_seq_length}")


def features_schema(regression: bool, token_types: bool) -> pa.Schema:
    """textclass's columns; ``token_type_ids`` only for a tokenizer that returns them."""
    schema = REGRESSION_SCHEMA if regression else FEATURES_SCHEMA
    return schema if token_types else schema.remove(schema.get_field_index("token_type_ids"))


class GlueChunk(NamedTuple):
    config: GluePrepConfig
    token_types: bool
    examples: list[tuple[int, TextExample]]


def export_model_dir(tokenizer_dir: Path, _scratch: Path) -> str:
    """The workers' setup argument: the tokenizer folder (each worker loads the HF tokenizer from it)."""
    return str(tokenizer_dir)


def setup_worker(tokenizer_dir: str):
    return load_fast_tokenizer(tokenizer_dir)


def encode_examples(tokenizer, examples: list[TextExample], max_seq_length: int) -> tuple[dict, int]:
    """The tokenizer's own encoding of each (text, pair), truncated; also how many were cut."""
    texts = [example.text for example in examples]
    pairs = None if examples[0].text_pair is None else [example.text_pair for example in examples]
    encoded = tokenizer(texts, pairs, truncation=True, max_length=max_seq_length)
    full = tokenizer(texts, pairs, truncation=False, return_attention_mask=False, return_token_type_ids=False)
    cut = sum(len(whole) > len(kept) for whole, kept in zip(full["input_ids"], encoded["input_ids"]))
    return encoded, cut


def convert_chunk(tokenizer, chunk: GlueChunk) -> tuple[dict, dict]:
    """One feature per example (columns of ``features_schema``) and the chunk's counts."""
    task = TASKS[chunk.config.glue_task]
    examples = [example for _, example in chunk.examples]
    encoded, cut = encode_examples(tokenizer, examples, chunk.config.max_seq_length)
    class_id = {name: k for k, name in enumerate(task.labels)}
    columns = {
        "example_id": [example.example_id for example in examples],
        "example_index": [index for index, _ in chunk.examples],
        "input_ids": encoded["input_ids"],
        "label": [(float("nan") if task.regression else NO_LABEL) if example.label is None else
                  example.label if task.regression else class_id[example.label] for example in examples],
        "window_index": [0] * len(examples),
        "num_windows": [1] * len(examples),
    }
    if chunk.token_types:
        columns["token_type_ids"] = encoded["token_type_ids"]
    return columns, {"examples_converted": len(examples), "texts_truncated": cut}


def read_chunks(path: Path, config: GluePrepConfig, token_types: bool, rows_per_chunk: int,
                labelled: bool = True) -> ReadResult:
    examples, skipped, info = (read_glue if labelled else read_glue_test)(path, config.glue_task)
    indexed = list(enumerate(examples))
    chunks = [GlueChunk(config, token_types, indexed[i:i + rows_per_chunk])
              for i in range(0, len(indexed), rows_per_chunk)]
    return ReadResult(chunks=chunks, examples_in=info["rows"], skipped=skipped,
                      info={**info, "windows": len(examples)})


def prepare_glue(input_path: str | Path, out_dir: str | Path, tokenizer_dir: str | Path | None = None,
                 config: GluePrepConfig | None = None, nproc: int = 1, mode: str = "shards",
                 rows_per_chunk: int = 512, reserve_cpus: int = 1, progress=None, labelled: bool = True) -> dict:
    """Build ``input_path``'s features into ``out_dir``; returns the manifest.

    Broken rows are skipped and listed in the manifest with their lines (evaluation refuses a dev
    file with any). Raises :class:`GlueFormatError` on a file that is not the task's TSV.
    ``labelled=False``: the task's test layout (predictions).
    """
    if config is None:
        raise ValueError("prepare_glue needs a GluePrepConfig naming the GLUE task (glue_task)")
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_model_dir()
    token_types = "token_type_ids" in load_fast_tokenizer(tokenizer_dir).model_input_names
    schema = features_schema(TASKS[config.glue_task].regression, token_types)
    return run_stage(
        dataset="glue", split=f"{config.glue_task}-{split_name(input_path)}", input_path=Path(input_path),
        out_dir=Path(out_dir), config=asdict(config), tokenizer_dir=tokenizer_dir,
        read=lambda path: read_chunks(path, config, token_types, rows_per_chunk, labelled), setup=setup_worker,
        convert=convert_chunk, schema=schema, nproc=nproc, mode=mode, reserve_cpus=reserve_cpus, progress=progress,
        export=export_model_dir,
    )


def summarize(manifest: dict, out_dir: Path) -> str:
    counts, info = manifest["counts"], manifest["input"]
    reasons = "; ".join(f"{n} {reason}" for reason, n in sorted(manifest["skip_reasons"].items())) or "none"
    return (f"glue {info['glue_task']} {manifest['split']}: {counts['features_out']} features from "
            f"{counts['examples_converted']}/{counts['examples_in']} rows, {counts['examples_skipped']} skipped "
            f"({reasons}); {counts.get('texts_truncated', 0)} truncated at {manifest['config']['max_seq_length']} "
            f"tokens; {manifest['seconds']:.1f}s -> {out_dir}")
