"""The multiprocessing engine shared by every prep stage.

Design: a ``multiprocess`` pool whose initializer gives each
worker a stable id (taken from a shared counter) and loads the large objects (the tokenizer) once per
worker; tasks carry only a chunk of raw examples. A shared counter (a ``Value`` used under its
own lock) hands out globally unique, dense feature ids. Ids are reserved in chunk order, so the
same input gives the same ids whatever the mode, the number of processes or the scheduling.

Two sinks, same worker code:
- ``merge``: workers send Arrow record batches back; the main process writes one file.
- ``shards``: each worker appends to its own Arrow shard; the main process lists the shards.

Workers are started with ``spawn``: a fork of a process whose Rust tokenizer already started its
thread pool can deadlock, and spawn behaves the same on every OS. Tokenizer threads are switched
off inside workers so ``nproc`` is the real degree of parallelism. A worker that raises fails
the run with its error; a worker that dies (SIGKILL, OOM) is noticed by the main process, which
stops the pool and raises instead of waiting forever. SIGTERM or SIGHUP to the main process stops
the pool too (``prep.stopping``): the run raises ``Stopped`` and the workers are terminated, and
on Linux a worker whose main process died without that (SIGKILL) is sent SIGTERM by the kernel.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa

from prep.folders import FeaturesFolder
from prep.stopping import set_parent_death_signal, stop_on_signals

log = logging.getLogger(__name__)

MODES = ("shards", "merge")
_POLL_S = 0.2
_TURN_TIMEOUT_S = 600.0


class WorkerDied(RuntimeError):
    """A pool worker exited without reporting an error (killed, out of memory, crashed)."""


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cap_nproc(requested: int, reserve_cpus: int = 1) -> int:
    """Limit ``requested`` to the CPUs this process may use minus ``reserve_cpus`` (at least 1).

    Leaving a core free keeps the machine responsive (the seed's advice); benchmarks that
    measure up to the CPU count pass ``reserve_cpus=0``.
    """
    if requested < 1:
        raise ValueError(f"nproc must be >= 1, got {requested}")
    if reserve_cpus < 0:
        raise ValueError(f"reserve_cpus must be >= 0, got {reserve_cpus}")
    cap = max(1, available_cpus() - reserve_cpus)
    if requested > cap:
        log.warning("nproc %d capped to %d (%d CPUs, %d kept free)", requested, cap, available_cpus(), reserve_cpus)
    return min(requested, cap)


@dataclass
class PoolResult:
    files: list[dict]  # [{"path": name relative to out_dir, "rows": n}]
    num_features: int
    stats: dict = field(default_factory=dict)
    nproc: int = 1
    seconds: float = 0.0  # from the first task handed out to the last result


def _ref(fn: Callable) -> tuple[str, str]:
    """An importable (module, name) for ``fn``, even when its module runs as ``python -m``."""
    module = fn.__module__
    if module == "__main__":
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise ValueError(f"{fn.__qualname__} is defined in a script; workers need an importable module")
        module = spec.name
    return module, fn.__qualname__


def _resolve(ref: tuple[str, str]) -> Callable:
    module, name = ref
    return getattr(importlib.import_module(module), name)


# --- worker side -------------------------------------------------------------------------
# One namespace per worker process, filled by the pool initializer.
_WORKER: dict[str, Any] = {}


def _init_worker(next_worker_id, nproc, counter, turn, turn_cond, barrier, setup_ref, setup_arg, convert_ref,
                 schema, out_dir, mode, file_stem, main_pid):
    set_parent_death_signal(signal.SIGTERM, expected_parent=main_pid)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    # A shared counter, not a Queue: a Queue's put() returns before its feeder thread has
    # written the item, so a fast worker's get_nowait() could find it empty (seen in CI).
    with next_worker_id.get_lock():
        worker_id = next_worker_id.value
        next_worker_id.value = worker_id + 1
    if worker_id >= nproc:
        # Only a replacement for a worker that died gets here; the main process is stopping.
        raise RuntimeError("no worker id left: a previous worker died")
    _WORKER.update(
        worker_id=worker_id,
        counter=counter,
        turn=turn,
        turn_cond=turn_cond,
        barrier=barrier,
        state=_resolve(setup_ref)(setup_arg),
        convert=_resolve(convert_ref),
        schema=schema,
        out_dir=Path(out_dir),
        mode=mode,
        file_stem=file_stem,
        writer=None,
        shard_name=None,
        shard_rows=0,
        id_wait_seconds=0.0,
    )


def _reserve_ids(chunk_index: int, count: int) -> int:
    """Take ``count`` ids from the shared counter once every earlier chunk has taken its own."""
    cond, turn, counter = _WORKER["turn_cond"], _WORKER["turn"], _WORKER["counter"]
    waited = time.perf_counter()
    with cond:  # the counter's own lock
        if not cond.wait_for(lambda: turn.value == chunk_index, timeout=_TURN_TIMEOUT_S):
            raise RuntimeError(f"chunk {chunk_index}: waited {_TURN_TIMEOUT_S:.0f}s for chunk {turn.value}")
        base = counter.value
        counter.value = base + count
        turn.value = chunk_index + 1
        cond.notify_all()
    _WORKER["id_wait_seconds"] += time.perf_counter() - waited
    return base


def _convert_task(task):
    chunk_index, payload = task
    payload = pickle.loads(payload)
    columns, stats = _WORKER["convert"](_WORKER["state"], payload)
    schema: pa.Schema = _WORKER["schema"]
    count = len(next(iter(columns.values()))) if columns else 0
    waited_before = _WORKER["id_wait_seconds"]
    base = _reserve_ids(chunk_index, count)
    stats = {**stats, "id_wait_seconds": _WORKER["id_wait_seconds"] - waited_before}
    if count == 0:
        return 0, None, stats
    ids = pa.array(np.arange(base, base + count, dtype=np.int64))
    batch = pa.RecordBatch.from_arrays(
        [ids] + [pa.array(columns[f.name], type=f.type) if not isinstance(columns[f.name], pa.Array)
                 else columns[f.name] for f in schema if f.name != "feature_id"],
        schema=schema,
    )
    if _WORKER["mode"] == "merge":
        return count, batch, stats
    if _WORKER["writer"] is None:
        name = FeaturesFolder.WORKER_FILE.format(stem=_WORKER["file_stem"], worker=_WORKER["worker_id"])
        _WORKER["shard_name"] = name
        _WORKER["writer"] = pa.ipc.new_file(str(_WORKER["out_dir"] / name), schema)
    _WORKER["writer"].write_batch(batch)
    _WORKER["shard_rows"] += count
    return count, None, stats


def _close_task(_):
    writer = _WORKER["writer"]
    if writer is not None:
        writer.close()
        _WORKER["writer"] = None
    result = (_WORKER["worker_id"], _WORKER["shard_name"], _WORKER["shard_rows"])
    # Every worker blocks here until all have arrived, so no worker can take two close tasks.
    _WORKER["barrier"].wait(timeout=_TURN_TIMEOUT_S)
    return result


# --- main side ---------------------------------------------------------------------------
def merge_stats(total: dict, chunk: dict) -> None:
    """Add a chunk's stats into ``total``: numbers are summed, lists concatenated."""
    for key, value in chunk.items():
        if isinstance(value, list):
            total.setdefault(key, []).extend(value)
        else:
            total[key] = total.get(key, 0) + value


def _check_alive(workers) -> None:
    for proc in workers:
        code = proc.exitcode
        if code is not None:
            how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
            raise WorkerDied(
                f"prep worker pid {proc.pid} died ({how}; SIGKILL or the OOM killer, or a crash "
                "in its start-up: see its traceback above); nothing was written"
            )


def _check_main_importable() -> None:
    """Spawned workers re-import ``__main__``; a program read from stdin cannot be re-imported."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return
    path = getattr(main, "__file__", None)
    if path is not None and not os.path.isfile(path):
        raise RuntimeError(
            f"the main program ({path}) is not a file that spawned prep workers can re-import: "
            "run it from a .py file or as a module (python -m ...)"
        )


def _wait(async_result, workers):
    import multiprocess

    while True:
        try:
            return async_result.get(timeout=_POLL_S)
        except multiprocess.TimeoutError:
            _check_alive(workers)


@stop_on_signals()
def _collect(results, workers, stats: dict, merged_writer, progress) -> int:
    """Take the workers' results in chunk order (checking they are alive); returns features written."""
    import multiprocess

    written = done = 0
    while True:
        try:
            count, batch, chunk_stats = results.next(timeout=_POLL_S)
        except StopIteration:
            return written
        except multiprocess.TimeoutError:
            _check_alive(workers)
            continue
        merge_stats(stats, chunk_stats)
        if batch is not None:
            merged_writer.write_batch(batch)
        written += count
        done += 1
        if progress is not None:
            progress(done, written)


def _close_shards(pool, nproc: int, workers, out_dir: Path, schema: pa.Schema, file_stem: str) -> list[dict]:
    """Shards mode: every worker closes its file; the list of shards (an empty file if no rows at all)."""
    files = []
    for worker_id, name, rows in sorted(_wait(pool.map_async(_close_task, range(nproc), chunksize=1), workers)):
        if name is not None:
            files.append({"path": name, "rows": rows, "worker": worker_id})
    if not files:  # no rows at all: still publish the schema, as merge mode does
        empty_name = FeaturesFolder.EMPTY_FILE.format(stem=file_stem)
        pa.ipc.new_file(str(out_dir / empty_name), schema).close()
        files.append({"path": empty_name, "rows": 0})
    return files


def run_pool(
    chunks: Iterable[Any] | Callable[[], Iterable[Any]],
    *,
    setup: Callable[[Any], Any],
    setup_arg: Any,
    convert: Callable[[Any, Any], tuple[dict, dict]],
    schema: pa.Schema,
    out_dir: Path,
    nproc: int,
    mode: str,
    file_stem: str = "features",
    progress: Callable[[int, int], None] | None = None,
) -> PoolResult:
    """Convert ``chunks`` (in order) on ``nproc`` workers and write Arrow files into ``out_dir``.

    ``chunks`` may be a callable returning them: it is called once the workers are starting, so
    reading the input overlaps their start-up (imports, tokenizer load).

    ``setup(setup_arg)`` runs once per worker and returns its state (e.g. the tokenizer);
    ``convert(state, chunk)`` returns ``(columns, stats)``: a dict of column name -> values for
    every schema field but ``feature_id``, and a dict of counts that are summed over chunks.
    Both must be module-level functions. ``progress(chunks_done, features_done)`` is called from
    the main process as results arrive. SIGTERM/SIGHUP raise ``prep.stopping.Stopped`` here,
    after the workers are terminated.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if schema.field(0).name != "feature_id":
        raise ValueError("schema must start with the feature_id column")
    # Imported here, not at the top: tools that only read features (train, eval, the GPU run) need
    # no pool, and multiprocess (with dill) is not installed everywhere they run.
    import multiprocess

    _check_main_importable()
    started = time.perf_counter()
    ctx = multiprocess.get_context("spawn")
    next_worker_id = ctx.Value("i", 0)
    counter = ctx.Value("q", 0)
    turn = ctx.Value("q", 0, lock=False)
    turn_cond = ctx.Condition(counter.get_lock())
    barrier = ctx.Barrier(nproc)
    before = {p.pid for p in ctx.active_children()}
    pool = ctx.Pool(
        nproc,
        initializer=_init_worker,
        initargs=(next_worker_id, nproc, counter, turn, turn_cond, barrier, _ref(setup), setup_arg, _ref(convert),
                  schema, str(out_dir), mode, file_stem, os.getpid()),
    )
    workers = [p for p in ctx.active_children() if p.pid not in before]
    stats: dict = {}
    files: list[dict] = []
    written = 0
    try:
        merged_writer = None
        if mode == "merge":
            merged_name = FeaturesFolder.MERGED_FILE.format(stem=file_stem)
            merged_writer = pa.ipc.new_file(str(out_dir / merged_name), schema)
        # Chunks go out as C-pickled bytes: the pool's own pickler (dill, pure Python) is ~15x
        # slower on nested text, and that main-process time is taken from the workers' cores.
        if callable(chunks):
            chunks = chunks()
        started = time.perf_counter()  # PoolResult.seconds: converting, not reading
        tasks = ((i, pickle.dumps(chunk, protocol=pickle.HIGHEST_PROTOCOL)) for i, chunk in enumerate(chunks))
        written = _collect(pool.imap(_convert_task, tasks, chunksize=1), workers, stats, merged_writer, progress)
        if merged_writer is not None:
            merged_writer.close()
            files.append({"path": merged_name, "rows": written})
        else:
            files = _close_shards(pool, nproc, workers, out_dir, schema, file_stem)
    finally:
        # Every result is in and every shard closed (or we are failing): no need to wait for
        # the workers' interpreter teardown (~0.5 s), which close() + join() would.
        pool.terminate()
        pool.join()
    if counter.value != written or sum(f["rows"] for f in files) != written:
        raise RuntimeError(f"feature count mismatch: counter {counter.value}, rows written {written}, files {files}")
    return PoolResult(files=files, num_features=written, stats=stats, nproc=nproc,
                      seconds=time.perf_counter() - started)
