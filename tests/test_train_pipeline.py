"""pipeline.finetune.FineTuned: launches the trainer as a subprocess; complete runs are not redone."""

from __future__ import annotations

import json

import pytest

import luigi
from luigi.execution_summary import LuigiStatusCode

import pipeline.finetune as finetune
from train import launch
from tasks.gap.model import synthetic_gap_table
from train.testing import write_feature_dir
from train.config import TrainConfig
from tests.test_prep_pool import gone_pid


@pytest.mark.fast
def test_launch_command_and_world_size_check(monkeypatch):
    assert launch.launch_command(["--task", "gap"], 1)[1:] == ["-m", "train", "--task", "gap"]
    multi = launch.launch_command(["--task", "gap"], 4)
    assert multi[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4"]
    assert launch.train_argv(global_batch_size=32, resume=True, no_bucketing=False, model=None) == [
        "--global-batch-size", "32", "--resume"]
    monkeypatch.setattr(launch, "visible_cuda_devices", lambda: 2)
    with pytest.raises(RuntimeError, match="world_size 4 > 2 visible GPU"):
        launch.check_world_size(4)
    launch.check_world_size(2)
    launch.check_world_size(4, device="cpu")


def test_finetuned_task_runs_once_and_reports_progress(tmp_path, monkeypatch, tiny_encoder_dir):
    monkeypatch.setattr(finetune, "_POLL_SECONDS", 0.2)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the trainer subprocess inherits it
    monkeypatch.setattr(finetune, "visible_cuda_devices", lambda: 0)
    model = tiny_encoder_dir
    features = write_feature_dir(tmp_path / "gap", synthetic_gap_table(64), "gap", "train", 64)
    task = finetune.FineTuned(task="gap", features_dir=str(features), runs_dir=str(tmp_path / "runs"),
                              model_dir=str(model), precision="fp32", global_batch_size=16, max_steps=3,
                              lr=1e-3, world_size=1, device="cpu")
    assert task.resources == {}
    # What an attempt killed in its first checkpoint write and its model write leaves (its pid gone):
    # the task deletes it before training, though nothing resumes (no last.pt yet).
    dead = gone_pid()
    stale = [task.run_dir / "checkpoints" / f".last.pt.tmp-{dead}", task.run_dir / f".model.tmp-{dead}-0a1b2c"]
    stale[1].mkdir(parents=True)
    stale[0].parent.mkdir()
    stale[0].write_bytes(b"half a checkpoint")
    result = luigi.build([task], local_scheduler=True, detailed_summary=True)
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    run_dir = task.run_dir
    assert not any(path.exists() for path in stale) and not list(run_dir.rglob(".*.tmp-*"))
    assert run_dir.parent == tmp_path / "runs" and run_dir.name.startswith("finetune-gap-multiply-")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 3
    progress = launch.read_progress(run_dir)
    assert (progress["phase"], progress["step"], progress["total_steps"]) == ("done", 3, 3)
    messages, percentages = [], []
    task.set_status_message, task.set_progress_percentage = messages.append, percentages.append
    task._report(progress)
    assert percentages == [100] and messages[0].startswith("done: step 3/3, loss ")
    stamp = (run_dir / "metrics.json").stat().st_mtime_ns

    again = luigi.build([finetune.FineTuned(**{**task.param_kwargs, "world_size": 2})],
                        local_scheduler=True, detailed_summary=True)
    assert again.status == LuigiStatusCode.SUCCESS
    assert (run_dir / "metrics.json").stat().st_mtime_ns == stamp  # world_size is not significant: nothing re-ran
    other = finetune.FineTuned(**{**task.param_kwargs, "lr": 2e-3})
    assert other.run_dir != run_dir


@pytest.mark.fast
def test_dropout_enters_the_run_folder_hash_only_when_set(monkeypatch):
    # A CPU without native bf16, where precision auto trains in fp32 as it did when these names were published.
    monkeypatch.setattr(finetune, "visible_cuda_devices", lambda: 0)
    monkeypatch.setattr(finetune, "cpu_native_bf16", lambda: False)
    params = dict(task="gap", features_dir="/x/features/gap-development-abc", runs_dir="/x/runs",
                  eval_features_dir="/x/features/gap-validation-def", model_dir="/x/model", lr=1e-4, epochs=2,
                  global_batch_size=16)
    # The name these settings had before the dropout field existed: published run folders keep theirs.
    assert finetune.FineTuned(**params).run_dir.name == "finetune-gap-multiply-e652c05d32"
    assert finetune.FineTuned(**params, dropout=0.2).run_dir != finetune.FineTuned(**params).run_dir
    with pytest.raises(ValueError, match="dropout must be in"):
        TrainConfig(task="gap", features_dir="x", run_dir="y", dropout=1.5)


@pytest.mark.fast
def test_the_packaged_models_own_folder_is_the_default_encoder(monkeypatch, tiny_encoder_dir_dropout):
    """Naming the packaged MiniLM's folder (by any spelling) finds the default's artifacts, not new ones."""
    from pipeline import FullRun, GlueResults, Sweep
    from prep.tokenizer import default_model_dir

    packaged = default_model_dir()
    monkeypatch.chdir(packaged.parent)
    params = dict(task="gap", features_dir="/x/features/gap-development-abc", runs_dir="/x/runs", lr=1e-4)
    for spelling in (str(packaged), f"./{packaged.name}/", str(packaged.parent / ".." / packaged.parent.name / packaged.name)):
        assert finetune.FineTuned(**params, model_dir=spelling).run_dir == finetune.FineTuned(**params).run_dir
        assert FullRun(model_dir=spelling).task_id == FullRun().task_id
        assert GlueResults(model=spelling).encoder_dir() is None and Sweep(task="gap", model_dir=spelling).model_dir is None
    other = tiny_encoder_dir_dropout
    assert FullRun(model_dir=str(other)).model_dir == str(other)
    assert finetune.FineTuned(**params, model_dir=str(other)).run_dir != finetune.FineTuned(**params).run_dir


@pytest.mark.fast
def test_run_logged_returns_when_the_command_exits_not_at_the_next_poll(tmp_path):
    import sys
    import time

    polls = []
    started = time.monotonic()
    launch.run_logged([sys.executable, "-c", "import time; time.sleep(0.5)"], tmp_path / "a.log", "sleeper",
                      on_poll=lambda: polls.append(1), poll_seconds=60)
    assert time.monotonic() - started < 30 and polls == []  # not the 60 s poll interval
    launch.run_logged([sys.executable, "-c", "import time; time.sleep(1.5)"], tmp_path / "b.log", "sleeper",
                      on_poll=lambda: polls.append(1), poll_seconds=0.1)
    assert len(polls) >= 3  # progress reported while it ran
    with pytest.raises(RuntimeError, match="failing exited with 3"):
        launch.run_logged([sys.executable, "-c", "print('the reason'); raise SystemExit(3)"], tmp_path / "c.log",
                          "failing")
