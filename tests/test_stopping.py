"""Stopping is clean: a stopped run leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_data
from tests.test_pipeline_fullrun import write_cfg

psutil = pytest.importorskip("psutil", reason="psutil (the bench extra) finds a run's processes")

LUIGI = str(Path(sys.executable).with_name("luigi"))
STOP_DEADLINE_S = 15.0


@pytest.fixture(scope="module")
def tiny_gap(tmp_path_factory):
    """A tiny model and synthetic GAP features: training starts in seconds and runs as long as asked."""
    from train.testing import make_tiny_model_dir, synthetic_gap_table, write_feature_dir

    root = tmp_path_factory.mktemp("stopping")
    model = make_tiny_model_dir(root / "tiny-bert", dropout=0.0)
    features = write_feature_dir(root / "gap", synthetic_gap_table(64), "gap", "train", 64)
    return model, features


def luigi_env(tmp_path: Path, config: dict) -> dict:
    cfg = write_cfg(tmp_path / "luigi.cfg", config)
    return {**os.environ, "LUIGI_CONFIG_PATH": str(cfg), "OMP_NUM_THREADS": "1"}


def finetune_command(model: Path, features: Path, runs: Path, *extra: str) -> list[str]:
    return [LUIGI, "--module", "pipeline", "GapFineTuned", "--local-scheduler", "--features-dir", str(features),
            "--model-dir", str(model), "--out-dir", str(runs), "--device", "cpu", "--precision", "fp32",
            "--global-batch-size", "8", "--select-best", "false", "--calibrate", "false", *extra]


def wait_for(condition, proc: subprocess.Popen, what: str, timeout_s: float = 240.0):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert proc.poll() is None, f"the run ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:.0f}s"
        time.sleep(0.2)
    return found


def processes_mentioning(text: str) -> list[psutil.Process]:
    """Live processes whose command line mentions ``text`` (children reparented to pid 1 included)."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        if proc.info["status"] == psutil.STATUS_ZOMBIE or proc.pid == os.getpid():
            continue
        if any(text in part for part in proc.info["cmdline"] or ()):
            found.append(proc)
    return found


def sigterm_and_check_nothing_left(proc: subprocess.Popen, marker: str) -> None:
    """SIGTERM the luigi process alone; within STOP_DEADLINE_S it and every process it started are gone."""
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert descendants, "the run had started no process to stop"
    started = time.monotonic()
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pass
    left = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    gone, alive = psutil.wait_procs(left, timeout=max(0.0, STOP_DEADLINE_S - (time.monotonic() - started)))
    stragglers = {p.pid for p in alive} | {p.pid for p in processes_mentioning(marker)}
    try:
        assert proc.returncode is not None, f"luigi pid {proc.pid} still running {STOP_DEADLINE_S:.0f}s after SIGTERM"
        assert not stragglers, f"processes left {STOP_DEADLINE_S:.0f}s after SIGTERM: {sorted(stragglers)}"
    finally:  # never leave a test's processes running, whatever it found
        for pid in [proc.pid, *stragglers]:
            with _no_such_process():
                os.kill(pid, signal.SIGKILL)
        proc.wait()


class _no_such_process:  # noqa: N801 - a tiny suppress() for a race the caller expects
    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        return kind is not None and issubclass(kind, (ProcessLookupError, psutil.NoSuchProcess))


@pytest.mark.parametrize("world_size,workers", [(1, 1), (2, 1), (1, 2)],
                         ids=["in-process", "torchrun", "luigi-worker-process"])
def test_sigterm_during_training_leaves_no_process(tiny_gap, tmp_path, world_size, workers):
    model, features = tiny_gap
    runs = tmp_path / "runs"
    command = finetune_command(model, features, runs, "--max-steps", "100000", "--epochs", "1000",
                               "--world-size", str(world_size), "--workers", str(workers))
    proc = subprocess.Popen(command, cwd=REPO, env=luigi_env(tmp_path, {}), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        run_dir = wait_for(lambda: next((p.parent for p in runs.glob("finetune-gap-*/progress.json")), None),
                           proc, "training progress")
    except BaseException:
        proc.kill()
        raise
    sigterm_and_check_nothing_left(proc, str(run_dir))
    assert proc.returncode != 0  # a stopped run is not a successful one
    assert not (run_dir / "metrics.json").exists()


def test_sigterm_during_prep_leaves_no_worker(tmp_path):
    from prep.tokenizer import default_model_dir

    squad = shared_data("squad/train-v1.1.reconstructed.json")  # minutes of work on 2 processes
    runs = tmp_path / "runs"
    env = luigi_env(tmp_path, {"bertflow": {"runs_dir": runs}, "inputs": {"squad_train_v1_1": squad}})
    command = [LUIGI, "--module", "pipeline", "SquadFeatures", "--local-scheduler", "--data", "squad-train-v1.1",
               "--split", "train", "--nproc", "2", "--reserve-cpus", "0", "--tokenizer", str(default_model_dir())]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def workers_converting():
        children = psutil.Process(proc.pid).children(recursive=True)
        return len(children) >= 2 and list(runs.rglob(".squad-train-*.tmp-*/*.arrow"))

    try:
        wait_for(workers_converting, proc, "prep workers writing shards")
    except BaseException:
        proc.kill()
        raise
    # Spawned workers' command lines name multiprocess's entry point, not the run folder.
    sigterm_and_check_nothing_left(proc, str(runs))
    assert proc.returncode != 0
    assert not list(runs.rglob(".*.tmp-*")), "the stopped run left its temp folder"
