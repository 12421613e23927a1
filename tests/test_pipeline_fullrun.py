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
def tiny_setup(tmp_path_factory, tiny_encoder_dir_dropout):
    """Data slices, a tiny model, and the luigi.cfg settings that make FullRun take seconds."""
    root = tmp_path_factory.mktemp("fullrun")
    data = root / "data"
    data.mkdir()
    inputs = {f"gap_{split}": slice_gap(shared_data(f"gap/gap-{split}.tsv"), data / f"gap-{split}.tsv", 24)
              for split in ("development", "validation", "test")}
    inputs["squad_train_v1_1"] = slice_squad(shared_data("squad/train-v1.1.reconstructed.json"), data / "train.json", 2)
    inputs["squad_dev_v1_1"] = slice_squad(shared_data("squad/dev-v1.1.json"), data / "dev.json", 2)
    model = tiny_encoder_dir_dropout
    training = dict(max_steps=2, epochs=1, global_batch_size=8, device="cpu")
    config = {
        "inputs": inputs,
        "bertflow": {"runs_dir": root / "runs"},
        "GapFineTuned": training,
        "SquadFineTuned": training,
        "SquadFeatures": {"max_seq_length": 128, "doc_stride": 32, "max_query_length": 32},
        "GapFeatures": {"max_seq_length": 128},
        "GapEvaluation": {"device": "cpu"},
        "SquadEvaluation": {"device": "cpu"},
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
    result = luigi.build([FullRun(model_dir=str(model), nproc=1, **params)], local_scheduler=True,
                         detailed_summary=True, log_level="WARNING")
    return result, sorted(set(STARTED))


def test_fullrun_runs_then_caches_then_reruns_what_changed(tiny_setup, monkeypatch):
    root, model, config = tiny_setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    with configured(config):
        result, started = build_fullrun(model)
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
        # DataFile does not start: the configured copies exist (they are complete).
        assert started == ["FullRun", "GapEvaluation", "GapFeatures", "GapFineTuned", "Profile", "SquadEvaluation",
                           "SquadFeatures", "SquadFineTuned"]
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
        assert started == ["FullRun", "GapEvaluation", "GapFineTuned"]

    # ... one that changes a step's work re-runs the profile too.
    with configured({**config, "GapFineTuned": {**config["GapFineTuned"], "global_batch_size": 4}}):
        result, started = build_fullrun(model, squad=False)
        assert started == ["FullRun", "GapEvaluation", "GapFineTuned", "Profile"]

    # max_seq_length changes the features, so everything downstream of prep re-runs.
    with configured({**config, "GapFeatures": {"max_seq_length": 96}}):
        result, started = build_fullrun(model, squad=False)
        assert started == ["FullRun", "GapEvaluation", "GapFeatures", "GapFineTuned", "Profile"]
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS

    # A copy of the test file with the same bytes is the same input: nothing runs. Edited in
    # place, it re-runs exactly what depends on it: its features, the evaluation, the summary.
    copy = root / "elsewhere" / "gap-test.tsv"  # GAP names the split after the file, so the same name
    copy.parent.mkdir()
    copy.write_bytes(Path(config["inputs"]["gap_test"]).read_bytes())
    moved = {**config, "inputs": {**config["inputs"], "gap_test": copy}}
    with configured(moved):
        result, started = build_fullrun(model, squad=False)
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS and started == []
        rows = copy.read_text(encoding="utf-8").splitlines(keepends=True)
        copy.write_text("".join(rows[:-1]), encoding="utf-8")  # one test row fewer
        result, started = build_fullrun(model, squad=False)
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
        assert started == ["FullRun", "GapEvaluation", "GapFeatures"]
        assert STARTED.count("GapFeatures") == 1  # the test split only


def write_cfg(path: Path, config: dict) -> Path:
    lines = []
    for section, values in config.items():
        lines.append(f"[{section}]")
        lines += [f"{key} = {value}" for key, value in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def start_fullrun(command: list[str], env: dict) -> subprocess.Popen:
    # A session of its own: the kill reaches luigi, its prep pool and the trainer alike.
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def kill_when(proc: subprocess.Popen, ready, what: str, timeout: float = 300) -> list[Path]:
    """SIGKILL ``proc``'s process group as soon as ``ready()`` returns something; returns it.

    The kill points are states on disk (a temp folder, a checkpoint), not delays: the test
    knows what the run was doing when it died.
    """
    deadline = time.monotonic() + timeout
    while not (found := ready()):
        assert proc.poll() is None, f"FullRun ended (exit {proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return found


def temp_dirs(folder: Path) -> list[Path]:
    """atomic_output_dir's hidden temp folders (``.<name>.tmp-<pid>-<id>``) in ``folder``."""
    return [p for p in folder.glob(".*.tmp-*") if p.is_dir()] if folder.is_dir() else []


def final_dir(temp: Path) -> Path:
    return temp.with_name(temp.name[1:].rsplit(".tmp-", 1)[0])


def load_tensors(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return {**{f"encoder.{k}": v for k, v in load_file(run_dir / "model" / "model.safetensors").items()},
            **{f"head.{k}": v for k, v in load_file(run_dir / "head.safetensors").items()}}


def test_fullrun_killed_in_prep_training_and_evaluation_resumes_and_matches_an_unbroken_run(
        tiny_setup, tmp_path, monkeypatch):
    """The README's claim: a run killed at any point and started again completes, a training run
    found half done resumes from its checkpoint, and what it ends with is what an unbroken run
    ends with."""
    import torch

    from prep.features import open_features
    from train.checkpoint import load_checkpoint

    root, model, config = tiny_setup
    # Several epochs (a checkpoint at each end, evaluated on gap-validation) so a kill after the
    # first checkpoint lands with most of the run still to do.
    training = {**{k: v for k, v in config["GapFineTuned"].items() if k != "max_steps"}, "epochs": 8}
    config = {**config, "GapFineTuned": training}

    # The unbroken reference, in its own runs folder.
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    reference = tmp_path / "reference"
    with configured({**config, "bertflow": {"runs_dir": reference}}):
        result, _ = build_fullrun(model, squad=False, profile=False)
    assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text

    runs = tmp_path / "runs"
    cfg = write_cfg(tmp_path / "luigi.cfg", {**config, "bertflow": {"runs_dir": runs}})
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg), "OMP_NUM_THREADS": "1"}
    command = [str(Path(sys.executable).with_name("luigi")), "--module", "pipeline", "FullRun", "--local-scheduler",
               "--nproc", "1", "--model-dir", str(model), "--squad", "false", "--profile", "false"]

    # 1. Killed while a feature folder is being written.
    [temp] = kill_when(start_fullrun(command, env), lambda: temp_dirs(runs / "features"), "a prep temp folder")
    assert not (final_dir(temp) / "manifest.json").exists()

    # 2. Killed in training, after its first checkpoint.
    checkpoints = kill_when(start_fullrun(command, env), lambda: list(runs.glob("finetune-gap-*/checkpoints/last.pt")),
                            "a training checkpoint")
    run_dir = checkpoints[0].parents[1]
    assert not (run_dir / "metrics.json").exists(), "training ended before it could be killed"
    killed_at = load_checkpoint(checkpoints[0])["step"]
    total = json.loads(next(reference.glob("finetune-gap-*/metrics.json")).read_text())["steps"]
    assert 0 < killed_at < total

    # 3. Killed while the evaluation folder is being written (training is done by then).
    [temp] = kill_when(start_fullrun(command, env), lambda: temp_dirs(runs / "eval"), "an evaluation temp folder")
    assert not (final_dir(temp) / "manifest.json").exists()

    # 4. Started again: it completes.
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list(runs.glob("run-*/summary.md"))) == 1
    assert not list(runs.rglob(".*.tmp-*")) and not list(runs.rglob(".*.old-*"))  # nothing half-written left

    # The training resumed from the checkpoint it was killed after ...
    metrics = json.loads((run_dir / "metrics.json").read_text())
    [ref_run] = reference.glob("finetune-gap-*")
    ref_metrics = json.loads((ref_run / "metrics.json").read_text())
    assert metrics["resumed_from_step"] == killed_at and ref_metrics["resumed_from_step"] is None
    # ... and ended where the unbroken run ended: same weights, same selected epoch and temperature.
    assert metrics["steps"] == ref_metrics["steps"] == total
    torch.testing.assert_close(load_tensors(run_dir), load_tensors(ref_run), rtol=0, atol=0)
    assert metrics["selected"] == ref_metrics["selected"] and metrics["final_eval"] == ref_metrics["final_eval"]
    assert metrics["calibration"] == ref_metrics["calibration"]

    # Features and evaluation equal the unbroken run's (feature folders are named by content alone).
    names = sorted(p.name for p in (reference / "features").iterdir())
    assert sorted(p.name for p in (runs / "features").iterdir()) == names and len(names) == 3
    for name in names:
        assert open_features(runs / "features" / name).equals(open_features(reference / "features" / name)), name
    [evaluation], [ref_evaluation] = (runs / "eval").iterdir(), (reference / "eval").iterdir()
    assert json.loads((evaluation / "metrics.json").read_text())["metrics"] == \
        json.loads((ref_evaluation / "metrics.json").read_text())["metrics"]
    for name in ("submission.csv", "gap_predictions.tsv"):
        assert (evaluation / name).read_bytes() == (ref_evaluation / name).read_bytes()


def test_gap_results_table_over_heads_and_seeds_then_one_more_seed(tiny_setup, monkeypatch):
    from pipeline import GapResults

    root, model, config = tiny_setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # Selection and calibration on gap-validation, as the results recipe runs them.
    gap_training = {**config["GapFineTuned"], "select_best": "true", "calibrate": "true"}

    def build(seeds):
        STARTED.clear()
        task = GapResults(model_dir=str(model), nproc=1, heads=["multiply", "concat"], seeds=seeds)
        result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
        return Path(task.output().path), list(STARTED)

    with configured({**config, "GapFineTuned": gap_training}):
        table, started = build([1, 2])
        assert started.count("GapFineTuned") == 4 and started.count("GapEvaluation") == 4
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
        assert started.count("GapFineTuned") == 2 and started.count("GapEvaluation") == 2
        assert table3 != table and table.is_file()


def test_zero_articles_means_the_whole_file(tiny_setup):
    """luigi.cfg's [FullRun] limits make run to a SQuAD subset; 0 on the command line lifts them."""
    from pipeline import FullRun

    root, model, config = tiny_setup
    with configured(config):
        everything = FullRun(model_dir=str(model), nproc=1, squad_train_articles=0, squad_dev_articles=0).eval_tasks()
        first = FullRun(model_dir=str(model), nproc=1, squad_train_articles=1, squad_dev_articles=1).eval_tasks()
    for evaluation, articles in ((everything["squad"], None), (first["squad"], 1)):
        upstream = evaluation.requires()
        assert upstream["features"].max_articles == articles
        assert upstream["model"].requires()["train"].max_articles == articles
