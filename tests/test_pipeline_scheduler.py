"""Running the DAG against a real central scheduler (luigid), checked through its HTTP API."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_data, skip_or_fail
from tests.test_pipeline_fullrun import tiny_setup  # noqa: F401 - a fixture

LUIGID = Path(sys.executable).with_name("luigid")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def api(port: int, method: str, **data) -> dict:
    query = urllib.parse.urlencode({"data": json.dumps(data)})
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/{method}?{query}", timeout=5) as response:
        return json.loads(response.read())["response"]


@pytest.fixture
def luigid(tmp_path):
    """A luigid on a free loopback port with its state under tmp_path; yields the port."""
    port = free_port()
    state = tmp_path / "luigid"
    state.mkdir()
    proc = subprocess.Popen(
        [str(LUIGID), "--address", "127.0.0.1", "--port", str(port), "--state-path", str(state / "state.pickle"),
         "--logdir", str(state)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            api(port, "task_list", status="", upstream_status="", search="")
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail("luigid did not start")
            time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(timeout=10)


def run_luigi(args: list[str], cwd: Path, config: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config)}
    return subprocess.run([str(Path(sys.executable).with_name("luigi")), "--module", "pipeline", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def write_config(tmp_path: Path, port: int, body: str = "") -> Path:
    config = tmp_path / "luigi.test.cfg"
    config.write_text(f"[core]\nscheduler_host = 127.0.0.1\nscheduler_port = {port}\nautoload_range = false\n"
                      f"[bertflow]\nruns_dir = {tmp_path / 'runs'}\n{body}")
    return config


def test_tasks_run_against_luigid_are_done_in_its_api(tmp_path, luigid):
    validation = shared_data("gap/gap-validation.tsv")
    config = write_config(tmp_path, luigid, f"[inputs]\ngap_validation = {validation}\n")
    done = run_luigi(["GapFeatures", "--data", "gap-validation", "--nproc", "1"], cwd=REPO, config=config)
    assert done.returncode == 0, done.stderr[-2000:]
    tasks = api(luigid, "task_list", status="DONE", upstream_status="", search="")
    families = sorted(task["name"] for task in tasks.values())
    assert families == ["DataFile", "GapFeatures"]
    assert not api(luigid, "task_list", status="FAILED", upstream_status="", search="")


def test_failed_task_exits_non_zero(tmp_path, luigid):
    config = write_config(tmp_path, luigid, f"[inputs]\ngap_validation = {tmp_path / 'missing.tsv'}\n")
    done = run_luigi(["GapFeatures", "--data", "gap-validation"], cwd=REPO, config=config)
    assert done.returncode == 30  # [retcode] task_failed in luigi.cfg
    failed = api(luigid, "task_list", status="FAILED", upstream_status="", search="")
    assert [t["name"] for t in failed.values()] == ["DataFile"]


def process_ids_with_arg(arg: str) -> list[int]:
    """Pids of the processes with ``arg`` among their command-line arguments (Linux /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if arg in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0"):
                    pids.append(int(entry.name))
            except OSError:  # it ended while we looked
                continue
    return pids


def test_running_training_reports_its_step_and_percentage_to_luigid(tmp_path, luigid, tiny_encoder_dir):
    """What FineTuned reports while it trains reaches luigid, read back through its HTTP API.

    The trainer is paused (SIGSTOP) once its progress file says it is training, so the step the
    scheduler must show is known and stays put until luigi's next progress poll reports it.
    """
    from train.launch import read_progress
    from tasks.gap.model import synthetic_gap_table
    from train.testing import write_feature_dir

    model = tiny_encoder_dir
    features = write_feature_dir(tmp_path / "gap", synthetic_gap_table(400), "gap", "train", 64)
    runs = tmp_path / "runs"
    config = write_config(tmp_path, luigid)
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(config), "OMP_NUM_THREADS": "1"}
    log = tmp_path / "luigi.log"  # a file, not a pipe nobody drains while the test waits
    # 100 steps; progress.json is rewritten every 10 (the trainer's log interval).
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("luigi")), "--module", "pipeline", "FineTuned", "--task", "gap",
             "--features-dir", str(features), "--runs-dir", str(runs), "--model-dir", str(model), "--precision",
             "fp32", "--global-batch-size", "4", "--epochs", "1", "--device", "cpu"],
            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=sink, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not (found := [p.parent for p in runs.glob("finetune-gap-*/progress.json")
                             if (read_progress(p.parent) or {}).get("phase") == "train"]):
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "training never reported a step"
            time.sleep(0.005)
        [run_dir] = found
        trainers = process_ids_with_arg(str(run_dir / "launch_config.json"))  # python -m train --config RUN_DIR/...
        assert len(trainers) == 1, f"not one trainer process for {run_dir}: {trainers}"
        [trainer] = trainers
        os.kill(trainer, signal.SIGSTOP)
        try:
            frozen = read_progress(run_dir)
            assert frozen["phase"] == "train", f"training ended before it could be paused: {frozen}"
            step, total = frozen["step"], frozen["total_steps"]
            expected = f"train: step {step}/{total}, loss {frozen['loss']:.4f}"
            percent = int(100 * step / total)
            assert 0 < step <= total and 0 < percent <= 100
            deadline = time.monotonic() + 60  # luigi polls the progress file every few seconds
            while True:
                running = api(luigid, "task_list", status="RUNNING", upstream_status="", search="")
                training = {task_id: task for task_id, task in running.items() if task["name"] == "FineTuned"}
                if any(task["status_message"] == expected for task in training.values()):
                    break
                assert time.monotonic() < deadline, f"luigid never showed {expected!r}: {running}"
                time.sleep(0.2)
            [(task_id, task)] = training.items()
            assert task["progress_percentage"] == percent
            assert api(luigid, "get_task_status_message", task_id=task_id)["statusMessage"] == expected
            assert api(luigid, "get_task_progress_percentage", task_id=task_id)["progressPercentage"] == percent
        finally:
            os.kill(trainer, signal.SIGCONT)
        assert proc.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # Finished: the last report says so, at 100 %.
    done = api(luigid, "task_list", status="DONE", upstream_status="", search="")[task_id]
    assert re.fullmatch(rf"done: step {total}/{total}, loss \d+\.\d{{4}}", done["status_message"])
    assert done["progress_percentage"] == 100


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    skip_or_fail("Chromium is not installed (`make test-deps` installs Debian's chromium; CI's .ci/run does)")


def chromium(args: list[str], profile: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    # The flags keep a root, offline, GPU-less machine quiet: no sandbox, no background network.
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--window-size=1400,1000", "--virtual-time-budget=10000"]
    return subprocess.run([chromium_binary(), *flags, *args], capture_output=True, text=True, timeout=timeout)


class GraphNodes(HTMLParser):
    """The task nodes of luigid's dependency graph in a rendered page.

    luigi's visualiser (static/visualiser/js/graph.js, the default "svg" view) draws each task as
    ``<g class="node"><circle/><a class="graph-node-a" data-task-id=ID data-task-status=STATUS>
    <text>Family</text></a></g>``; ``nodes`` maps each ID to its (family, status).
    """

    def __init__(self):
        super().__init__()
        self.nodes: dict[str, tuple[str, str]] = {}
        self._open: tuple[str, str] | None = None  # (task id, status) of the <a> being read
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "a" and "graph-node-a" in (attrs.get("class") or "").split():
            self._open, self._text = (attrs["data-task-id"], attrs.get("data-task-status")), []

    def handle_data(self, data):
        if self._open:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._open:
            task_id, status = self._open
            self.nodes[task_id] = ("".join(self._text).strip(), status)
            self._open = None


def test_web_ui_shows_the_finished_fullrun_graph(tmp_path, luigid, tiny_setup):
    from tests.test_pipeline_fullrun import write_cfg

    browser = chromium_binary()  # skip before the slow part when there is no browser
    _, model, config = tiny_setup
    cfg = write_cfg(tmp_path / "luigi.cfg", {
        **config, "core": {"scheduler_host": "127.0.0.1", "scheduler_port": luigid, "autoload_range": "false"},
        "bertflow": {"runs_dir": tmp_path / "runs"},
    })
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(Path(sys.executable).with_name("luigi")), "--module", "pipeline", "FullRun", "--nproc",
                           "1", "--model-dir", str(model)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    tasks = api(luigid, "task_list", status="DONE", upstream_status="", search="")
    fullrun = [task_id for task_id, task in tasks.items() if task["name"] == "FullRun"]
    assert len(fullrun) == 1
    graph = api(luigid, "dep_graph", task_id=fullrun[0], include_done=True)  # what the page asks luigid for

    url = f"http://127.0.0.1:{luigid}/static/visualiser/index.html#tab=graph&taskId={urllib.parse.quote(fullrun[0])}"
    screenshot = tmp_path / "fullrun-graph.png"
    shot = chromium([f"--screenshot={screenshot}", url], tmp_path / "profile-shot")
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, (browser, shot.stderr[-2000:])
    parser = GraphNodes()
    parser.feed(chromium(["--dump-dom", url], tmp_path / "profile-dom").stdout)
    # Every task of FullRun's graph is a node on the page, under its family's name, done.
    assert parser.nodes == {task_id: (task["name"], "DONE") for task_id, task in graph.items()}
    families = {family for family, _ in parser.nodes.values()}
    assert {"FullRun", "DataFile", "GapFeatures", "SquadFeatures", "GapFineTuned", "SquadFineTuned", "GapEvaluation",
            "SquadEvaluation", "Profile"} <= families
    counts = {family: [f for f, _ in parser.nodes.values()].count(family) for family in families}
    # 5 data files (3 GAP, 2 SQuAD), 3 GAP and 2 SQuAD feature sets, 2 evaluations, 1 profile.
    assert (counts["DataFile"], counts["GapFeatures"], counts["SquadFeatures"], counts["GapEvaluation"],
            counts["SquadEvaluation"], counts["Profile"], counts["FullRun"]) == (5, 3, 2, 1, 1, 1, 1)
