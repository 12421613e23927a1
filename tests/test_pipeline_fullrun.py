"""FullRun end to end on a tiny model and tiny slices of the real data: caching, invalidation, crashes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import luigi
import pytest

from tests.conftest import REPO, luigi_config, shared_data

STARTED: list[str] = []


@luigi.Task.event_handler(luigi.Event.START)
def _record_start(task):
    STARTED.append(task.task_family)


def slice_gap(src: Path, dst: Path, rows: int) -> Path:
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    dst.write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return dst


def slice_squad(src: Path, dst: Path, paragraphs: int) -> Path:
    payload = json.loads(src.read_text(encoding="utf-8"))
    article = payload["data"][0]
    payload["data"] = [{**article, "paragraphs": article["paragraphs"][:paragraphs]}]
    dst.write_text(json.dumps(payload), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    """Data slices, a tiny model, and the luigi.cfg settings that make FullRun take seconds."""
    from train.testing import make_tiny_model_dir

    root = tmp_path_factory.mktemp("fullrun")
    data = root / "data"
    data.mkdir()
    inputs = {f"gap_{split}": slice_gap(shared_data(f"gap/gap-{split}.tsv"), data / f"gap-{split}.tsv", 24)
              for split in ("development", "validation", "test")}
    inputs["squad_train_v1_1"] = slice_squad(shared_data("squad/train-v1.1.reconstructed.json"), data / "train.json", 2)
    inputs["squad_dev_v1_1"] = slice_squad(shared_data("squad/dev-v1.1.json"), data / "dev.json", 2)
    model = make_tiny_model_dir(root / "tiny-bert")
    training = dict(max_steps=2, epochs=1, global_batch_size=8, device="cpu")
    config = {
        "inputs": inputs,
        "bertflow": {"runs_dir": root / "runs"},
        "GapFineTuned": training,
        "SquadFineTuned": training,
        "SquadFeatures": {"max_seq_length": 128, "doc_stride": 32, "max_query_length": 32},
        "GapFeatures": {"max_seq_length": 128},
        "Evaluation": {"device": "cpu"},
        "Profile": {"warmup_steps": 1, "active_steps": 2, "device": "cpu", "scaling": "false"},
    }
    return root, model, config


@contextlib.contextmanager
def configured(config: dict):
    with contextlib.ExitStack() as stack:
        for section, values in config.items():
            stack.enter_context(luigi_config(section, **values))
        yield


def build_fullrun(model: Path, **params):
    from pipeline import FullRun

    STARTED.clear()
    result = luigi.build([FullRun(model=str(model), nproc=1, **params)], local_scheduler=True,
                         detailed_summary=True, log_level="WARNING")
    return result, sorted(set(STARTED))


def test_fullrun_runs_then_caches_then_reruns_what_changed(tiny_setup, monkeypatch):
    root, model, config = tiny_setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with configured(config):
        result, started = build_fullrun(model)
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
        # DataFile does not start: the configured copies exist (they are complete).
        assert started == ["Evaluation", "FullRun", "GapFeatures", "GapFineTuned", "Profile", "SquadFeatures",
                           "SquadFineTuned"]
        summaries = list((root / "runs").glob("run-*/summary.md"))
        assert len(summaries) == 1
        text = summaries[0].read_text()
        assert "| gap | F1 |" in text and "| squad | EM |" in text and "tensorboard --logdir_spec" in text
        assert "## Profile: where a squad training step's time goes" in text

        # Nothing changed: nothing runs, not even FullRun.
        result, started = build_fullrun(model)
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS and started == []

    # Without SQuAD the GAP model is profiled (a new plan, so FullRun and Profile run).
    with configured(config):
        result, started = build_fullrun(model, squad=False)
        assert started == ["FullRun", "Profile"]

    # A training knob re-runs training and evaluation of that task, not prep; the learning rate
    # does not change a step's work, so the profile stays.
    with configured({**config, "GapFineTuned": {**config["GapFineTuned"], "lr": 5e-4}}):
        result, started = build_fullrun(model, squad=False)
        assert started == ["Evaluation", "FullRun", "GapFineTuned"]

    # ... one that changes a step's work re-runs the profile too.
    with configured({**config, "GapFineTuned": {**config["GapFineTuned"], "global_batch_size": 4}}):
        result, started = build_fullrun(model, squad=False)
        assert started == ["Evaluation", "FullRun", "GapFineTuned", "Profile"]

    # max_seq_length changes the features, so everything downstream of prep re-runs.
    with configured({**config, "GapFeatures": {"max_seq_length": 96}}):
        result, started = build_fullrun(model, squad=False)
        assert started == ["Evaluation", "FullRun", "GapFeatures", "GapFineTuned", "Profile"]
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS


def write_cfg(path: Path, config: dict) -> Path:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_killed_fullrun_completes_when_started_again(tiny_setup, tmp_path):
    root, model, config = tiny_setup
    runs = tmp_path / "runs"
    cfg = write_cfg(tmp_path / "luigi.cfg", {**config, "bertflow": {"runs_dir": runs}})
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg), "OMP_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).with_name("luigi")), "--module", "pipeline", "FullRun", "--local-scheduler",
               "--nproc", "1", "--model", str(model), "--squad", "false"]
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.monotonic() + 240
    while not list(runs.glob("finetune-gap-*/train.log")):  # kill it while training
        assert proc.poll() is None and time.monotonic() < deadline, "FullRun ended before training started"
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not list(runs.glob("run-*/summary.md"))
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(runs.glob("run-*/summary.md"))) == 1
    assert not list(runs.rglob(".*.tmp-*"))  # no half-written artifact left behind


def test_gap_results_table_over_heads_and_seeds_then_one_more_seed(tiny_setup, monkeypatch):
    from pipeline import GapResults

    root, model, config = tiny_setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # Selection and calibration on gap-validation, as the results recipe runs them.
    gap_training = {**config["GapFineTuned"], "select_best": "true", "calibrate": "true"}

    def build(seeds):
        STARTED.clear()
        task = GapResults(model=str(model), nproc=1, heads=["multiply", "concat"], seeds=seeds)
        result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
        return Path(task.output().path), list(STARTED)

    with configured({**config, "GapFineTuned": gap_training}):
        table, started = build([1, 2])
        assert started.count("GapFineTuned") == 4 and started.count("Evaluation") == 4
        result = json.loads(table.with_suffix(".json").read_text())
        assert [(g["group"]["head"], g["seeds"]) for g in result["groups"]] == [("multiply", [1, 2]), ("concat", [1, 2])]
        assert all("ensemble" in g for g in result["groups"])
        models = {Path(run["eval_dir"]).name: run["model_dir"] for run in result["runs"]}
        assert len(set(models.values())) == 4  # one training folder per head x seed
        for run in result["runs"]:
            metrics = json.loads((root / "runs" / run["model_dir"] / "metrics.json").read_text())
            assert metrics["calibration"]["temperature"] > 0 and metrics["selected"] is not None
        assert "| multiply | 2 | 1,2 |" in table.read_text()

        # A third seed trains and evaluates only that seed, per head, and makes a new table.
        table3, started = build([1, 2, 3])
        assert started.count("GapFineTuned") == 2 and started.count("Evaluation") == 2
        assert table3 != table and table.is_file()


def test_zero_articles_means_the_whole_file(tiny_setup):
    """luigi.cfg's [FullRun] limits make run to a SQuAD subset; 0 on the command line lifts them."""
    from pipeline import FullRun

    root, model, config = tiny_setup
    with configured(config):
        everything = FullRun(model=str(model), nproc=1, squad_train_articles=0, squad_dev_articles=0).feature_tasks()
        first = FullRun(model=str(model), nproc=1, squad_train_articles=1, squad_dev_articles=1).feature_tasks()
    assert everything["squad-train"].max_articles is None and everything["squad-test"].max_articles is None
    assert first["squad-train"].max_articles == 1
