"""Running the DAG against a real central scheduler (luigid), checked through its HTTP API."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
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
                           "1", "--model", str(model), "--squad", "false"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    tasks = api(luigid, "task_list", status="DONE", upstream_status="", search="")
    fullrun = [task_id for task_id, task in tasks.items() if task["name"] == "FullRun"]
    assert len(fullrun) == 1 and {"GapFeatures", "GapFineTuned", "Evaluation"} <= {t["name"] for t in tasks.values()}

    url = f"http://127.0.0.1:{luigid}/static/visualiser/index.html#tab=graph&taskId={urllib.parse.quote(fullrun[0])}"
    screenshot = tmp_path / "fullrun-graph.png"
    shot = chromium([f"--screenshot={screenshot}", url], tmp_path / "profile-shot")
    assert screenshot.is_file() and screenshot.stat().st_size > 10_000, (browser, shot.stderr[-2000:])
    dom = chromium(["--dump-dom", url], tmp_path / "profile-dom").stdout
    assert "FullRun" in dom and "GapFineTuned" in dom
