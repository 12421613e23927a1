"""Stopping is clean: a stopped run leaves no process behind, and one artifact has one writer at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import luigi
import psutil  # the bench extra (make install installs it): finds a run's processes
import pytest

from tests.conftest import REPO, shared_data
from tests.test_pipeline_fullrun import STARTED, configured, write_cfg

LUIGI = str(Path(sys.executable).with_name("luigi"))
STOP_DEADLINE_S = 15.0


@pytest.fixture(scope="module")
def tiny_gap(tmp_path_factory, tiny_encoder_dir):
    """A tiny model and synthetic GAP features: training starts in seconds and runs as long as asked."""
    from tasks.gap.model import synthetic_gap_table
    from train.testing import write_feature_dir

    root = tmp_path_factory.mktemp("stopping")
    model = tiny_encoder_dir
    features = write_feature_dir(root / "gap", synthetic_gap_table(64), "gap", "train", 64)
    return model, features


def luigi_env(tmp_path: Path, config: dict) -> dict:
    cfg = write_cfg(tmp_path / "luigi.cfg", config)
    return {**os.environ, "LUIGI_CONFIG_PATH": str(cfg), "OMP_NUM_THREADS": "1"}


def finetune_command(model: Path, features: Path, runs: Path, *extra: str) -> list[str]:
    return [LUIGI, "--module", "pipeline", "GapFineTuned", "--local-scheduler", "--features-dir", str(features),
            "--model-dir", str(model), "--runs-dir", str(runs), "--device", "cpu", "--precision", "fp32",
            "--global-batch-size", "8", "--select-best", "false", "--calibrate", "false", *extra]


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


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


def signal_and_check_nothing_left(proc: subprocess.Popen, marker: str, signum: int = signal.SIGTERM) -> None:
    """Signal the luigi process alone; within STOP_DEADLINE_S it and every process it started are gone."""
    descendants = psutil.Process(proc.pid).children(recursive=True)
    assert descendants, "the run had started no process to stop"
    started = time.monotonic()
    os.kill(proc.pid, signum)
    try:
        proc.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        pass
    left = [p for p in descendants if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    gone, alive = psutil.wait_procs(left, timeout=max(0.0, STOP_DEADLINE_S - (time.monotonic() - started)))
    stragglers = {p.pid for p in alive} | {p.pid for p in processes_mentioning(marker)}
    try:
        assert proc.returncode is not None, f"luigi pid {proc.pid} still running {STOP_DEADLINE_S:.0f}s after the signal"
        assert not stragglers, f"processes left {STOP_DEADLINE_S:.0f}s after the signal: {sorted(stragglers)}"
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


@pytest.mark.parametrize("world_size,workers,signum", [(1, 1, signal.SIGTERM), (2, 1, signal.SIGTERM),
                                                      (1, 2, signal.SIGTERM), (1, 1, signal.SIGINT)],
                         ids=["in-process", "torchrun", "luigi-worker-process", "ctrl-c"])
def test_sigterm_during_training_leaves_no_process(tiny_gap, tmp_path, world_size, workers, signum):
    model, features = tiny_gap
    runs = tmp_path / "runs"
    command = finetune_command(model, features, runs, "--max-steps", "100000", "--epochs", "1000",
                               "--world-size", str(world_size), "--workers", str(workers))
    # SIGINT at its default action, as in a terminal: a suite started as a background job (cmd &)
    # inherits SIGINT ignored, luigi rightly keeps it ignored, and the ctrl-c case would test nothing.
    proc = subprocess.Popen(command, cwd=REPO, env=luigi_env(tmp_path, {}), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=_default_sigint)
    try:
        run_dir = wait_for(lambda: next((p.parent for p in runs.glob("finetune-gap-*/progress.json")), None),
                           proc, "training progress")
    except BaseException:
        proc.kill()
        raise
    signal_and_check_nothing_left(proc, str(run_dir), signum)
    assert proc.returncode != 0  # a stopped run is not a successful one
    assert not (run_dir / "metrics.json").exists()


def test_sigterm_during_prep_leaves_no_worker(tmp_path):
    from prep.tokenizer import default_model_dir

    squad = shared_data("squad/train-v1.1.reconstructed.json")  # minutes of work on 2 processes
    runs = tmp_path / "runs"
    env = luigi_env(tmp_path, {"bertflow": {"runs_dir": runs}, "inputs": {"squad_train_v1_1": squad}})
    command = [LUIGI, "--module", "pipeline", "SquadFeatures", "--local-scheduler", "--data", "squad-train-v1.1",
               "--split", "train", "--nproc", "2", "--reserve-cpus", "0", "--model-dir", str(default_model_dir())]
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
    signal_and_check_nothing_left(proc, str(runs))
    assert proc.returncode != 0
    assert not list(runs.rglob(".*.tmp-*")), "the stopped run left its temp folder"


def test_two_concurrent_runs_of_one_finetune_train_it_once(tiny_gap, tmp_path, monkeypatch):
    """Two luigi commands at once, the second while the first trains: one training, both succeed."""
    from pipeline import GapFineTuned

    model, features = tiny_gap
    runs = tmp_path / "runs"
    first = subprocess.Popen(finetune_command(model, features, runs, "--max-steps", "30"), cwd=REPO,
                             env=luigi_env(tmp_path, {}), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: list(runs.glob("finetune-gap-*/train.log")), first, "training to start")
        # The second run, in this process so its summary can be read: the fine-tune is not complete
        # yet, so Luigi runs it, and it waits for the first instead of training the folder too.
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        STARTED.clear()
        with configured({}):
            task = GapFineTuned(features_dir=str(features), model_dir=str(model), runs_dir=str(runs), device="cpu",
                                precision="fp32", global_batch_size=8, max_steps=30, select_best=False,
                                calibrate=False)
            result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
        _, stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, stderr[-3000:]
    assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
    assert STARTED == ["GapFineTuned"]  # it ran (waited), rather than finding the model already made
    (run_dir,) = runs.glob("finetune-gap-*")
    assert run_dir == Path(task.output().path).parent
    assert (run_dir / "metrics.json").is_file()
    launches = [line for line in (run_dir / "train.log").read_text().splitlines() if line.startswith("$ ")]
    assert len(launches) == 1, launches
    assert not list(runs.glob(".*.lock"))  # the lock file goes with its last holder


def test_two_commands_started_together_train_once(tiny_gap, tmp_path):
    """Luigi's own pid lock turns away a second identical command line (exit 10, already_running);
    two different commands that reach one artifact (here: a knob that does not change it) are
    what the artifact lock is for."""
    model, features = tiny_gap
    runs = tmp_path / "runs"
    env = luigi_env(tmp_path, {})
    commands = [finetune_command(model, features, runs, "--max-steps", "5", "--num-workers", str(n)) for n in (0, 1)]
    procs = [subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for command in commands]
    try:
        errors = [proc.communicate(timeout=300)[1] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    assert [proc.returncode for proc in procs] == [0, 0], [e[-2000:] for e in errors]
    (run_dir,) = runs.glob("finetune-gap-*")
    assert (run_dir / "metrics.json").is_file()
    assert sum(line.startswith("$ ") for line in (run_dir / "train.log").read_text().splitlines()) == 1


@pytest.mark.fast
def test_a_second_writer_waits_then_reuses_what_the_first_wrote(tmp_path):
    from prep.artifact import atomic_output_dir, read_manifest, write_json_atomic
    from prep.folders import MANIFEST

    out = tmp_path / "features"
    writing = threading.Event()

    def first_run():
        with atomic_output_dir(out) as tmp:
            writing.set()
            time.sleep(0.5)
            write_json_atomic(tmp / MANIFEST, {"schema_version": 1, "writer": "first"})

    first = threading.Thread(target=first_run)
    first.start()
    assert writing.wait(30)
    with atomic_output_dir(out, reuse_if_made_while_waiting=True) as tmp:
        reused = tmp is None
    first.join()
    assert reused and read_manifest(out)["writer"] == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features"]  # no lock file, no temp folder


@pytest.mark.fast
def test_a_lock_held_too_long_fails_naming_its_holder(tmp_path):
    from prep.locking import ArtifactLocked, artifact_lock

    out = tmp_path / "finetune-gap-x"
    held, release = threading.Event(), threading.Event()

    def holder():
        with artifact_lock(out, "training FineTuned(x)"):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(ArtifactLocked, match=rf"pid {os.getpid()} on .*training FineTuned\(x\)"):
            with artifact_lock(out, timeout_s=0.3):
                pass
        with artifact_lock(tmp_path / "other", timeout_s=0):  # other artifacts are not held up
            pass
    finally:
        release.set()
        thread.join()
    with artifact_lock(out, timeout_s=0) as lock, artifact_lock(out, timeout_s=0) as again:  # re-entrant
        assert not lock.waited and not again.waited


@pytest.mark.fast
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    from prep.locking import artifact_lock

    out = tmp_path / "features"
    code = ("import os, signal, sys; from prep.locking import artifact_lock\n"
            "with artifact_lock(sys.argv[1]):\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    subprocess.run([sys.executable, "-c", code, str(out)], cwd=REPO, check=False, timeout=60)
    with artifact_lock(out, timeout_s=0) as lock:  # the kernel let go of it with its holder
        assert not lock.waited


@pytest.mark.fast
def test_a_worker_that_reruns_an_unguarded_main_program_fails_instead_of_waiting_for_its_parent(tmp_path):
    """A script that takes an artifact's lock at its top level (no ``if __name__ == "__main__":``)
    re-runs that code in every spawned worker; the worker would wait for ever on its parent's lock."""
    script = tmp_path / "unguarded.py"
    script.write_text(
        "import multiprocessing, sys\nfrom prep.locking import artifact_lock\n\ndef work():\n    pass\n\n"
        "with artifact_lock(sys.argv[1]):\n"
        "    worker = multiprocessing.get_context('spawn').Process(target=work)\n"
        "    worker.start()\n    worker.join(60)\n    print('worker exit code', worker.exitcode)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "features")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "worker exit code 1" in done.stdout, done.stderr[-2000:]
    assert "Put that code under `if __name__ == \"__main__\":`" in done.stderr
