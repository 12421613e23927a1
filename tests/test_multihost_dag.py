"""Two Luigi workers (standing in for two machines, sharing the runs folder) against one luigid run
a FullRun DAG together (GAP, its prep split in shards): every task runs exactly once, on one
worker or the other, both exit 0 and luigid shows every task DONE."""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import REPO, shared_data
from tests.test_pipeline_fullrun import slice_gap, write_cfg
from tests.test_pipeline_scheduler import api, luigid  # noqa: F401 - a fixture

# A --module for the workers: the pipeline, plus a line per task start (worker name, task id).
COUNTING_MODULE = textwrap.dedent('''
    import os

    import luigi

    from pipeline import *  # noqa: F401,F403 - every task of the DAG

    @luigi.Task.event_handler(luigi.Event.START)
    def _count(task):
        with open(os.environ["BERTFLOW_TEST_STARTS"], "a", encoding="utf-8") as log:
            log.write(os.environ["BERTFLOW_TEST_WORKER"] + " " + task.task_id + "\\n")
''')


def test_two_workers_share_one_dag_and_run_each_task_once(tmp_path, luigid, tiny_encoder_dir_dropout):  # noqa: F811 - the fixture
    data = tmp_path / "data"
    data.mkdir()
    # 70 GAP rows: two 64-row prep chunks, so both shards of each GAP file have rows.
    inputs = {f"gap_{split}": slice_gap(shared_data(f"gap/gap-{split}.tsv"), data / f"gap-{split}.tsv", 70)
              for split in ("development", "validation", "test")}
    model = tiny_encoder_dir_dropout
    training = dict(max_steps=2, epochs=1, global_batch_size=8, device="cpu", select_best="false", calibrate="false")
    runs = tmp_path / "runs"  # the shared runs folder
    cfg = write_cfg(tmp_path / "luigi.cfg", {
        "core": {"scheduler_host": "127.0.0.1", "scheduler_port": luigid, "autoload_range": "false"},
        # stay while the other worker runs a task this one's next task needs
        "worker": {"keep_alive": "true", "wait_interval": "0.5", "ping_interval": "0.5"},
        # luigi's exit codes speak for one worker: tasks the other one ran are "not run" by this one, and
        # a worker that leaves while the other runs the last tasks says "already running". luigid's DONE
        # is the check (docs/scaling.md); a failed task still exits 30.
        "retcode": {"not_run": "0", "already_running": "0"},
        "inputs": inputs, "bertflow": {"runs_dir": runs},
        "GapFineTuned": training,
        "GapFeatures": {"max_seq_length": 128, "shards": 2},
        "GapEvaluation": {"device": "cpu"},
    })
    (tmp_path / "countingpipeline.py").write_text(COUNTING_MODULE)
    starts = tmp_path / "starts.log"
    command = [str(Path(sys.executable).with_name("luigi")), "--module", "countingpipeline", "FullRun", "--nproc", "1",
               "--model-dir", str(model), "--profile", "false", "--squad", "false", "--no-lock"]
    workers = {}
    for name in ("host-a", "host-b"):
        env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg), "OMP_NUM_THREADS": "1", "BERTFLOW_TEST_STARTS": str(starts),
               "BERTFLOW_TEST_WORKER": name, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"}
        workers[name] = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         text=True)
    try:
        logs = {name: worker.communicate(timeout=400)[0] for name, worker in workers.items()}
    finally:
        for worker in workers.values():
            if worker.poll() is None:
                worker.kill()
    assert {name: worker.returncode for name, worker in workers.items()} == {"host-a": 0, "host-b": 0}, \
        "\n----\n".join(log[-3000:] for log in logs.values())

    started = [line.split(" ", 1) for line in starts.read_text().splitlines()]
    per_task = collections.Counter(task_id for _, task_id in started)
    assert per_task and max(per_task.values()) == 1, [t for t, n in per_task.items() if n > 1]
    assert {worker for worker, _ in started} == {"host-a", "host-b"}  # both did part of the work
    done = api(luigid, "task_list", status="DONE", upstream_status="", search="")
    # every task of the DAG ran, once, and luigid has it DONE (the data files were there from the start)
    assert set(per_task) == {task_id for task_id, task in done.items() if task["name"] != "DataFile"}
    for status in ("PENDING", "RUNNING", "FAILED"):
        assert not api(luigid, "task_list", status=status, upstream_status="", search=""), status
    families = collections.Counter(task["name"] for task in done.values())
    # 3 GAP files x (2 shards + their set), one fine-tune, one evaluation
    assert (families["DataFile"], families["GapFeatures"], families["GapFineTuned"], families["GapEvaluation"],
            families["FullRun"]) == (3, 9, 1, 1, 1)

    # The training run was launched once (train.log gets a "$ command" line per launch).
    [train_log] = runs.glob("finetune-*/train.log")
    assert sum(line.startswith("$ ") for line in train_log.read_text().splitlines()) == 1
    # GAP trained and was scored on shard sets: each set's manifest lists both shards' files, rows in both.
    sets = [json.loads(path.read_text()) for path in runs.glob("features/gap-*/manifest.json")
            if "shards" in json.loads(path.read_text())]
    assert len(sets) == 3
    for manifest in sets:
        assert len(manifest["shards"]) == 2 and manifest["counts"]["examples_in"] == 70
        assert all(entry["rows"] > 0 for entry in manifest["files"])
