"""The task seam and the config objects: engines know tasks only through the registry, every
config field is a flag and a Luigi parameter, and the DAG is static."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import luigi
import pytest

from tests.conftest import REPO, luigi_config

ENGINES = ("prep", "train", "eval", "profiling", "pipeline")


@pytest.mark.fast
def test_engines_never_name_a_task():
    found = subprocess.run(["git", "grep", "-nE", r"['\"](squad|gap|textclass|glue|race)['\"]", "--", *ENGINES], cwd=REPO,
                           capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == "", found.stdout  # 1: git grep found nothing


@pytest.mark.fast
def test_registry_lists_the_task_packages_and_refuses_others():
    from tasks import UnknownTaskError, get_task, task_names
    from tasks.spec import EvalSpec, FullRunPlan, PrepSpec, SuitePlan, TrainSpec, UserDataPlan

    assert task_names() == ("gap", "glue", "race", "squad", "textclass")
    for name in task_names():
        spec = get_task(name)
        assert spec.name == name and spec.train.default_head in spec.train.heads
        assert (type(spec.prep), type(spec.train), type(spec.eval)) == (PrepSpec, TrainSpec, EvalSpec), name
        # A task runs in FullRun on official files, through its own entry on the user's files, or as a suite.
        assert isinstance(spec.plan, (FullRunPlan, UserDataPlan, SuitePlan)), name
        if isinstance(spec.plan, FullRunPlan):
            assert spec.plan.train.data in spec.data_files and spec.plan.test.data in spec.data_files
    with pytest.raises(UnknownTaskError, match="unknown task 'nope'; registered: gap, glue, race, squad, textclass"):
        get_task("nope")


# The entry points: each resolves the task once and passes the spec (or the part an engine needs) down.
ENTRY_POINTS = {"eval/__main__.py", "eval/api.py", "prep/__main__.py", "profiling/__main__.py", "profiling/worker.py",
                "train/__main__.py", "train/launch.py"}


@pytest.mark.fast
def test_only_entry_points_look_a_task_up():
    found = subprocess.run(["git", "grep", "-l", "get_task(", "--", "train", "eval", "prep", "profiling"], cwd=REPO,
                           capture_output=True, text=True).stdout.split()
    assert set(found) <= ENTRY_POINTS, sorted(set(found) - ENTRY_POINTS)
    # Engine modules know the seam's types (tasks.spec), never the registry.
    registry = subprocess.run(["git", "grep", "-lE", r"^\s*(from tasks import|import tasks\b)", "--", "train", "eval",
                               "prep", "profiling"], cwd=REPO, capture_output=True, text=True).stdout.split()
    assert set(registry) <= ENTRY_POINTS, sorted(set(registry) - ENTRY_POINTS)


@pytest.mark.fast
def test_every_spec_field_is_read_by_an_engine():
    """A field no engine reads is a promise nothing keeps (a task would fill it in vain)."""
    from tasks.spec import EvalSpec, PredictSpec, PrepSpec, TaskSpec, TrainSpec

    for part in (PrepSpec, TrainSpec, EvalSpec, PredictSpec, TaskSpec):
        for field in dataclasses.fields(part):
            found = subprocess.run(["git", "grep", "-lE", rf"\.{field.name}\b", "--", *ENGINES], cwd=REPO,
                                   capture_output=True, text=True).stdout.split()
            assert found, f"{part.__name__}.{field.name} is read by no engine"


def help_text(*module_args: str) -> str:
    done = subprocess.run([sys.executable, "-m", *module_args, "--help"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@pytest.mark.fast
def test_every_train_config_field_is_a_flag_with_its_default():
    from train.config import TrainConfig

    text = help_text("train")
    for field in dataclasses.fields(TrainConfig):
        if field.name == "world_size":  # set by the launcher from the process group
            continue
        assert flag(field.name) in text, field.name
    assert "(default: auto)" in text  # precision: one default everywhere
    for alias in ("--features", "--out", "--model", "--eval-features", "--no-bucketing"):
        assert alias in text


def test_eval_and_profiling_flags_come_from_their_config_objects():
    from profiling.config import ProfileConfig
    from tasks import get_task

    for name in ("squad", "gap", "textclass", "race"):
        text = help_text("eval", name)
        for field in dataclasses.fields(get_task(name).eval.config):
            assert flag(field.name) in text, (name, field.name)
        assert "--log-level" in text
    text = help_text("profiling")
    for field in dataclasses.fields(ProfileConfig):
        assert flag(field.name) in text, field.name


@pytest.mark.fast
def test_train_config_json_comes_back_with_config_and_flags_override_it(tmp_path):
    from train.__main__ import build_parser, config_from_args
    from train.config import TrainConfig

    (tmp_path / "enc").mkdir()  # the entry point resolves the model (prep.models): a folder must exist
    written = TrainConfig(task="gap", features_dir=str(tmp_path / "f"), run_dir=str(tmp_path / "run"),
                          model_dir=str(tmp_path / "enc"), head="concat", lr=1e-4, epochs=3, select_best=False,
                          length_bucketing=False, precision="fp32")
    # As a run writes it: the config plus keys that are not fields (ignored).
    record = {**written.to_dict(), "max_seq_length": 256, "schema_version": 1, "tokenizer": {"path": "x"}}
    path = tmp_path / "train_config.json"
    path.write_text(json.dumps(record))
    argv = ["--config", str(path), "--out", str(tmp_path / "run2"), "--lr", "5e-5"]
    config = config_from_args(build_parser(argv).parse_args(argv), world_size=1, device_type="cpu")
    assert config == written.replace(run_dir=str(tmp_path / "run2"), lr=5e-5)


@pytest.mark.fast
def test_precision_auto_resolves_per_device():
    from tasks import get_task
    from train.config import TrainConfig

    config = TrainConfig(task="squad", features_dir="f", run_dir="o")
    assert config.precision == "auto" and config.head is None
    assert config.for_task(get_task("squad").train).head == "span"  # the task's default head
    assert config.resolved("cuda", "enc").precision == "fp16"
    assert config.resolved("cpu", "enc").precision == "fp32" and config.resolved("cpu", "enc").model_dir == "enc"


@pytest.mark.fast
def test_finetuned_has_a_parameter_for_every_train_config_field():
    from pipeline import FineTuned
    from train.config import TrainConfig

    params = dict(FineTuned.get_params())
    # run_dir is the run folder, named by the task inside its runs root; resume and the progress
    # bar are the task's to decide.
    for field in dataclasses.fields(TrainConfig):
        if field.name not in ("run_dir", "resume", "progress_bar"):
            assert field.name in params, field.name
    assert not params["world_size"].significant and not params["device"].significant
    assert params["weight_decay"].significant and params["max_grad_norm"].significant


def closure(task: luigi.Task) -> list[luigi.Task]:
    seen, todo = {}, [task]
    while todo:
        current = todo.pop()
        if current.task_id not in seen:
            seen[current.task_id] = current
            todo += luigi.task.flatten(current.requires())
    return list(seen.values())


@pytest.mark.fast
def test_the_whole_dag_is_known_before_any_data_exists(tmp_path):
    """Every edge of FullRun's graph, with no data file anywhere yet: nothing complete, nothing raises."""
    from pipeline import Evaluation, FullRun, GapEvaluation
    from pipeline.data import OFFICIAL, config_key

    no_copies = {config_key(name): "" for name in OFFICIAL}  # luigi.offline.cfg points at ../shared/data
    with luigi_config("inputs", data_dir=tmp_path / "no-data", **no_copies), \
            luigi_config("bertflow", runs_dir=tmp_path / "runs"):
        tasks = closure(FullRun())
        families = sorted(task.task_family for task in tasks)
        assert families == ["DataFile"] * 5 + ["FullRun", "GapEvaluation", "GapFeatures", "GapFeatures",
                            "GapFeatures", "GapFineTuned", "Profile", "SquadEvaluation", "SquadFeatures",
                            "SquadFeatures", "SquadFineTuned"]
        assert not any(task.complete() for task in tasks)
        # One pending rule: every artifact named after a missing file, directly or through an upstream folder.
        artifacts = [task for task in tasks if task.task_family != "DataFile"]
        assert all(Path(task.output().path).parent.parent == tmp_path / "runs" / "pending" for task in artifacts)
        # One downstream task alone builds what it needs: the task's FullRun roles.
        for evaluation in (Evaluation(task="gap"), GapEvaluation()):
            alone = sorted(task.task_family for task in closure(evaluation))
            assert alone == ["DataFile"] * 3 + [evaluation.task_family, "GapFeatures", "GapFeatures", "GapFeatures",
                                                "GapFineTuned"]


@pytest.mark.fast
def test_console_describes_tasks_and_training_progress(capsys):
    from pipeline.console import TrainingReporter, describe
    from pipeline.prep_tasks import FEATURES

    assert describe(FEATURES["gap"](data="gap-test")) == "GapFeatures(data=gap-test)"
    report = TrainingReporter("GapFineTuned", global_batch_size=16, every_s=60)
    report({"phase": "train", "step": 20, "total_steps": 100, "loss": 0.61234, "sequences_per_second": 8.0})
    report({"phase": "train", "step": 21, "total_steps": 100, "loss": 0.6, "sequences_per_second": 8.0})  # too soon
    report({"phase": "eval", "step": 50, "total_steps": 100, "loss": 0.5})  # a new phase prints at once
    report.every_s = 0
    report({"phase": "eval", "step": 50, "total_steps": 100, "loss": 0.5})  # the same record: never twice
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("GapFineTuned: train step 20/100 (20%), loss 0.6123, 8.0 seq/s, ETA 2m40s")
    assert lines[1].endswith("GapFineTuned: eval step 50/100 (50%), loss 0.5000")
