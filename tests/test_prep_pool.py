"""The pool engine: deterministic dense ids, both sinks, failures that fail instead of hanging."""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pyarrow as pa
import pytest

from prep.artifact import atomic_file, atomic_output_dir, is_complete, remove_stale_temps, write_json_atomic
from prep.folders import MANIFEST
from prep.pool import WorkerDied, cap_nproc, run_pool

SCHEMA = pa.schema([("feature_id", pa.int64()), ("chunk", pa.int64()), ("item", pa.int64()),
                    ("worker_pid", pa.int64())])


# Module-level so spawned workers can import them.
def setup_state(arg):
    return arg


def convert_items(state, chunk):
    """Chunk k yields k % 4 rows, after a random pause that shuffles completion order.

    With ``state`` a folder, chunks 0 and 1 wait there until two worker processes have arrived, so
    both workers certainly convert a chunk (else a worker slow to start may get none, and write no shard).
    """
    time.sleep(random.random() * 0.02)
    if isinstance(state, str) and os.path.isdir(state) and chunk < 2:
        open(os.path.join(state, str(os.getpid())), "w").close()
        deadline = time.monotonic() + 30
        while len(os.listdir(state)) < 2:
            if time.monotonic() > deadline:
                raise TimeoutError("the second worker never took a chunk")
            time.sleep(0.01)
    if state == "raise" and chunk == 5:
        raise ValueError("chunk 5 is bad")
    if state == "die" and chunk == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    count = chunk % 4
    return ({"chunk": [chunk] * count, "item": list(range(count)), "worker_pid": [os.getpid()] * count},
            {"examples_converted": 1, "rows": count, "skipped": [chunk] if count == 0 else []})


@pytest.fixture
def alarm():
    """Fail (rather than hang) a test that takes over 60 s."""
    def on_alarm(*_):
        raise TimeoutError("pool test hung")
    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def read_all(out_dir, files):
    tables = [pa.ipc.open_file(str(out_dir / f["path"])).read_all() for f in files]
    return pa.concat_tables(tables).sort_by("feature_id")


@pytest.mark.fast
@pytest.mark.parametrize("mode", ["shards", "merge"])
def test_ids_are_dense_and_follow_chunk_order(tmp_path, alarm, mode):
    meet = tmp_path / "meet"
    meet.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    result = run_pool(range(30), setup=setup_state, setup_arg=str(meet), convert=convert_items, schema=SCHEMA,
                      out_dir=out, nproc=2, mode=mode)
    table = read_all(out, result.files)
    expected = [(k, i) for k in range(30) for i in range(k % 4)]
    assert list(zip(table["chunk"].to_pylist(), table["item"].to_pylist())) == expected
    np.testing.assert_array_equal(table["feature_id"].to_numpy(), np.arange(len(expected)))
    assert result.num_features == len(expected)
    assert result.stats["examples_converted"] == 30 and result.stats["rows"] == len(expected)
    assert result.stats["skipped"] == [0, 4, 8, 12, 16, 20, 24, 28]  # lists concatenate in chunk order
    if mode == "shards":
        assert len(result.files) == 2 and sorted(f["worker"] for f in result.files) == [0, 1]
        # each shard was written by one worker process
        for f in result.files:
            pids = pa.ipc.open_file(str(out / f["path"])).read_all()["worker_pid"].unique()
            assert len(pids) == 1
    else:
        assert [f["path"] for f in result.files] == ["features.arrow"]


@pytest.mark.fast
def test_worker_exception_fails_the_run_with_its_error(tmp_path, alarm):
    with pytest.raises(ValueError, match="chunk 5 is bad"):
        run_pool(range(30), setup=setup_state, setup_arg="raise", convert=convert_items, schema=SCHEMA,
                 out_dir=tmp_path, nproc=2, mode="shards")


def test_killed_worker_fails_the_run_instead_of_hanging(tmp_path, alarm):
    started = time.monotonic()
    with pytest.raises(WorkerDied, match="killed by signal 9"):
        run_pool(range(30), setup=setup_state, setup_arg="die", convert=convert_items, schema=SCHEMA,
                 out_dir=tmp_path, nproc=2, mode="merge")
    assert time.monotonic() - started < 30


def test_failed_run_leaves_no_output(tmp_path, alarm):
    out = tmp_path / "features"
    with pytest.raises(WorkerDied):
        with atomic_output_dir(out) as tmp:
            run_pool(range(30), setup=setup_state, setup_arg="die", convert=convert_items, schema=SCHEMA,
                     out_dir=tmp, nproc=2, mode="shards")
            write_json_atomic(tmp / MANIFEST, {})
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.fast
def test_atomic_dir_replaces_previous_output_and_cleans_stale_temps(tmp_path):
    out = tmp_path / "features"
    stale = tmp_path / ".features.tmp-999999999-abcd1234"  # a pid that cannot exist
    stale.mkdir()
    for value in (1, 2):
        with atomic_output_dir(out) as tmp:
            write_json_atomic(tmp / MANIFEST, {"value": value})
    assert is_complete(out) and (out / MANIFEST).read_text().count('"value": 2') == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]


def gone_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@pytest.mark.fast
def test_temps_of_gone_writers_are_removed_and_a_live_writers_kept(tmp_path):
    import subprocess
    import sys

    dead = gone_pid()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        folder = tmp_path / "run"
        (folder / "checkpoints" / f".model.tmp-{dead}-ab12cd").mkdir(parents=True)
        (folder / "checkpoints" / f".model.tmp-{dead}-ab12cd" / "weights").write_bytes(b"x" * 10)
        for name in (f".last.pt.tmp-{dead}", f".best.pt.tmp-{dead}", f".last.pt.tmp-{live.pid}", "last.pt",
                     ".hidden", f"last.pt.tmp-{dead}", f".last.pt.tmp-{dead}x"):
            (folder / "checkpoints" / name).write_bytes(b"partial")
        (folder / f".tb.old-{dead}-0123abcd").mkdir()
        kept = {f".last.pt.tmp-{live.pid}", "last.pt", ".hidden", f"last.pt.tmp-{dead}", f".last.pt.tmp-{dead}x"}

        # The next write of last.pt deletes its own dead temps, nothing else.
        with atomic_file(folder / "checkpoints" / "last.pt") as tmp:
            tmp.write_bytes(b"new")
        assert not (folder / "checkpoints" / f".last.pt.tmp-{dead}").exists()
        assert (folder / "checkpoints" / f".best.pt.tmp-{dead}").exists()
        # A sweep of the folder: every temp of a gone process, files and folders, at any depth.
        assert remove_stale_temps(folder) == [folder / f".tb.old-{dead}-0123abcd"]
        removed = remove_stale_temps(folder, recursive=True)
        assert sorted(p.name for p in removed) == [f".best.pt.tmp-{dead}", f".model.tmp-{dead}-ab12cd"]
        assert {p.name for p in (folder / "checkpoints").iterdir()} == kept
        assert (folder / "checkpoints" / "last.pt").read_bytes() == b"new"
    finally:
        live.kill()
        live.wait()


@pytest.mark.fast
def test_program_from_stdin_is_refused_up_front():
    import subprocess
    import sys

    script = ("from prep.pool import run_pool\n"
              "from tests.test_prep_pool import SCHEMA, setup_state, convert_items\n"
              "run_pool(range(3), setup=setup_state, setup_arg='ok', convert=convert_items, schema=SCHEMA,"
              " out_dir='.', nproc=1, mode='merge')\n")
    done = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "not a file that spawned prep workers can re-import" in done.stderr


@pytest.mark.fast
def test_cap_nproc_leaves_headroom():
    cpus = len(os.sched_getaffinity(0))
    assert cap_nproc(10_000) == max(1, cpus - 1)
    assert cap_nproc(10_000, reserve_cpus=0) == cpus
    assert cap_nproc(1) == 1
    with pytest.raises(ValueError):
        cap_nproc(0)
