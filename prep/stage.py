"""One prep stage end to end: pool run into an atomic folder, count checks, manifest."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa

from prep import pool
from prep.artifact import SCHEMA_VERSION, atomic_output_dir, read_manifest, sha256_file, write_json_atomic
from prep.folders import FeaturesFolder
from prep.shards import current_shard, select_chunks
from prep.tokenizer import describe_tokenizer, export_tokenizer


@dataclass
class ReadResult:
    """What a reader hands the pool: chunks of clean examples, and what it skipped and why."""

    chunks: list[Any]
    examples_in: int
    skipped: list[dict] = field(default_factory=list)  # {"example_id", "reason", "where"}
    info: dict = field(default_factory=dict)  # extra facts for the manifest (format version...)


def skip(example_id: str | None, reason: str, where: str) -> dict:
    return {"example_id": example_id, "reason": reason, "where": where}


def run_stage(
    *,
    dataset: str,
    split: str,
    input_path: Path,
    out_dir: Path,
    config: dict,
    tokenizer_dir: Path,
    read: Callable[[Path], ReadResult],
    setup: Callable,
    convert: Callable,
    schema: pa.Schema,
    nproc: int,
    mode: str,
    reserve_cpus: int = 1,
    progress: Callable[[int, int, int], None] | None = None,
    input_sha256: str | None = None,
    export: Callable[[Path, Path], Any] = export_tokenizer,
) -> dict:
    """Read ``input_path``, convert it on a pool, and publish ``out_dir`` with its manifest.

    ``setup(export)`` runs once per worker with a :class:`prep.tokenizer.TokenizerExport`
    (``prep.tokenizer.load_backend(export)`` rebuilds the tokenizer from it).
    ``progress(chunks_done, chunks_total, features_done)`` is called from the main process.
    ``export(tokenizer_dir, scratch_file)`` makes the workers' ``setup`` argument instead (a task whose
    workers call the Hugging Face tokenizer itself; the scratch file is removed if written).
    Returns the manifest (that of a concurrent run which wrote ``out_dir`` first, if one did:
    the stage then does no work). ``input_sha256``: the caller's digest of an input that need not
    be one file (a folder of files; the task defines it), recorded instead of the file's sha256.
    Workers must report ``examples_converted`` (and may report a
    ``skipped`` list) in their stats; the run fails if examples are not conserved.
    """
    started = time.perf_counter()
    input_path = Path(input_path)
    if not (input_path.is_file() or (input_sha256 is not None and input_path.exists())):
        raise FileNotFoundError(f"input file not found: {input_path}")
    tokenizer = describe_tokenizer(tokenizer_dir)
    input_sha = input_sha256 or sha256_file(input_path)
    nproc = pool.cap_nproc(nproc, reserve_cpus)
    read_result: list[ReadResult] = []
    shard, shard_info = current_shard(), {}

    def read_chunks():  # called by the pool once its workers are starting
        result = read(input_path)
        if shard is not None:  # prep.shards: this run converts its part of the chunks only
            chunks, skipped, info = select_chunks(shard, result.chunks, result.skipped)
            shard_info.update(info, input_examples_in=result.examples_in)
            result = ReadResult(chunks=chunks, examples_in=result.examples_in, skipped=skipped, info=result.info)
        read_result.append(result)
        return read_result[0].chunks

    def report(done: int, features: int) -> None:
        progress(done, len(read_result[0].chunks), features)

    with atomic_output_dir(out_dir, reuse_if_made_while_waiting=True) as tmp:
        if tmp is None:  # another run wrote this very output while we waited for its lock
            return read_manifest(out_dir)
        setup_arg = export(tokenizer_dir, tmp / ".tokenizer.json")
        pooled = pool.run_pool(
            read_chunks,
            setup=setup,
            setup_arg=setup_arg,
            convert=convert,
            schema=schema,
            out_dir=tmp,
            nproc=nproc,
            mode=mode,
            file_stem=FeaturesFolder.STEM.format(dataset=dataset, split=split),
            progress=report if progress else None,
        )
        (tmp / ".tokenizer.json").unlink(missing_ok=True)
        manifest = _manifest(
            dataset=dataset, split=split, input_path=input_path, input_sha=input_sha, result=read_result[0],
            pooled=pooled, config=config, tokenizer=tokenizer, mode=mode, schema=schema,
            seconds=time.perf_counter() - started, shard=shard_info or None,
        )
        write_json_atomic(FeaturesFolder(tmp).manifest, manifest)
    return manifest


def _manifest(*, dataset: str, split: str, input_path: Path, input_sha: str, result: ReadResult, pooled,
              config: dict, tokenizer: dict, mode: str, schema: pa.Schema, seconds: float,
              shard: dict | None = None) -> dict:
    """The manifest of a finished run; raises if examples in != converted + skipped.

    A shard's examples are those of its chunks (counted as converted + skipped): the set it
    belongs to checks them against the input's (prep.shards.merge_shards).
    """
    stats = dict(pooled.stats)
    skipped = result.skipped + stats.pop("skipped", [])
    converted = stats.pop("examples_converted", 0)
    id_wait_seconds = stats.pop("id_wait_seconds", 0.0)
    examples_in = result.examples_in if shard is None else converted + len(skipped)
    if converted + len(skipped) != examples_in:
        raise RuntimeError(
            f"examples not conserved: {result.examples_in} in, {converted} converted, {len(skipped)} skipped"
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "dataset": dataset,
        "split": split,
        "input": {"path": str(input_path.resolve()), "sha256": input_sha,
                  "bytes": input_path.stat().st_size if input_path.is_file() else None, **result.info},
        "config": config,
        "tokenizer": tokenizer,
        "mode": mode,
        "nproc": pooled.nproc,
        "columns": schema.names,
        "files": pooled.files,
        "counts": {
            "examples_in": examples_in,
            "examples_converted": converted,
            "examples_skipped": len(skipped),
            "features_out": pooled.num_features,
            **stats,
        },
        "skip_reasons": dict(Counter(s["reason"] for s in skipped)),
        "skipped": skipped,
        "seconds": round(seconds, 3),
        "pool_seconds": round(pooled.seconds, 3),
        # time workers spent waiting for their turn at the ordered id counter
        "id_wait_seconds": round(id_wait_seconds, 3),
        "features_per_second": round(pooled.num_features / seconds, 1) if seconds > 0 else None,
        **({"shard": shard} if shard is not None else {}),
    }


def tqdm_progress(disable: bool):
    """A ``progress(done, total, features)`` callback drawing a tqdm bar (for the CLIs)."""
    from tqdm import tqdm

    bar = None

    def update(done: int, total: int, features: int) -> None:
        nonlocal bar
        if bar is None:
            bar = tqdm(total=total, unit="chunk", disable=disable, dynamic_ncols=True)
        bar.set_postfix(features=features, refresh=False)
        bar.update(done - bar.n)
        if done == total:
            bar.close()

    return update
