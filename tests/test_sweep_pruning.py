"""The trainer's pruning hook (train/trial.py) in-process on a tiny model: epochs reported to the
trial, a trial built to be bad stopped by the median pruner, a good one trained to the end; and
the search-space checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.gap.model import synthetic_gap_table
from train.config import TrainConfig
from train.dist import single_process
from train.testing import write_feature_dir
from tests.conftest import fine_tune

pytestmark = [pytest.mark.fast, pytest.mark.usefixtures("one_cpu_thread")]
MEDIAN = {"name": "MedianPruner", "kwargs": {"n_startup_trials": 2, "n_warmup_steps": 0}}


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_encoder_dir):
    root = tmp_path_factory.mktemp("prune")
    return {"root": root, "tiny": tiny_encoder_dir,
            "train": write_feature_dir(root / "train", synthetic_gap_table(32), "gap", "train", 64),
            "eval": write_feature_dir(root / "eval", synthetic_gap_table(16, seed=1), "gap", "validation", 64)}


def study_with_history(url: str, name: str, epoch_one_value: float, pruner: dict = MEDIAN, epochs: int = 1):
    """A study whose two finished trials reported ``epoch_one_value`` after epochs 1..``epochs``."""
    from pipeline.sweep_study import open_study

    study = open_study(url, name, "minimize", "eval_loss", pruner, {"lr": ["log", 1e-4, 1e-2]}, 0, 10)
    for _ in range(2):
        trial = study.ask()
        for epoch in range(1, epochs + 1):
            trial.report(epoch_one_value, epoch)
        study.tell(trial, epoch_one_value)
    return study


def trial_config(work, out: Path, url: str, study: str, number: int) -> TrainConfig:
    return TrainConfig(task="gap", features_dir=str(work["train"]), eval_features_dir=str(work["eval"]),
                       run_dir=str(out), model_dir=str(work["tiny"]), precision="fp32", global_batch_size=8,
                       epochs=3, lr=1e-3, progress_bar=False, device="cpu", trial_storage=url, trial_study=study,
                       trial_number=number)


def test_a_bad_trial_is_pruned_after_its_first_epoch_and_never_looks_complete(work, tmp_path):
    from prep.folders import RunFolder
    from train.checkpoint import load_checkpoint
    from train.trial import PRUNED_FILE, TrialPruned

    url = f"sqlite:///{tmp_path / 'study.db'}"
    # The others reached a held-out loss of 0.01 after one epoch; three-way cross-entropy starts near 1.1.
    study = study_with_history(url, "bad", 0.01)
    bad = study.ask()
    out = tmp_path / "run"
    with pytest.raises(TrialPruned):
        fine_tune(trial_config(work, out, url, "bad", bad.number), single_process("cpu"))
    verdict = json.loads((out / PRUNED_FILE).read_text())
    assert verdict["trial_number"] == bad.number and verdict["epoch"] == 1 and verdict["value"] > 0.5
    assert not (out / "metrics.json").exists()  # a pruned folder never looks complete
    saved = load_checkpoint(RunFolder(out).last_checkpoint)
    assert (saved["epoch"], saved["step"], saved["step_in_epoch"]) == (1, 4, 0)  # the epoch-end checkpoint
    frozen = study.trials[bad.number]
    assert list(frozen.intermediate_values) == [1] and frozen.intermediate_values[1] == verdict["value"]


def test_a_good_trial_reports_every_epoch_and_finishes(work, tmp_path):

    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = study_with_history(url, "good", 100.0)  # everyone else did worse: never pruned
    good = study.ask()
    out = tmp_path / "run"
    metrics = fine_tune(trial_config(work, out, url, "good", good.number), single_process("cpu"))
    assert (out / "metrics.json").is_file() and metrics["epochs_completed"] == 3
    reported = study.trials[good.number].intermediate_values
    assert reported == {entry["epoch"]: entry["eval_loss"] for entry in metrics["eval"]}


def test_search_space_errors_name_the_entry():
    from pipeline.sweep_study import SpaceError, check_space, in_space

    allowed = {"lr", "epochs", "head"}
    space = check_space({"lr": ["log", 1e-5, 1e-3], "epochs": ["int", 1, 3], "head": ["choice", "concat"]},
                        allowed, ("concat", "multiply"))
    assert in_space({"lr": 1e-4, "epochs": 5, "head": "concat"}, space) == {"lr": 1e-4, "head": "concat"}
    for bad, words in (({"dropout": ["float", 0, 1]}, "not a fine-tuning setting"),
                       ({"lr": ["log", 0, 1]}, "low > 0"), ({"lr": ["uniform", 0, 1]}, "kind one of"),
                       ({"epochs": ["int", 3, 1]}, "low < high"), ({"head": ["choice", "segment"]}, "heads are"),
                       ({}, "empty")):
        with pytest.raises(SpaceError, match=words):
            check_space(bad, allowed, ("concat", "multiply"))
    with pytest.raises(ValueError, match="go together"):
        TrainConfig(task="gap", features_dir="f", run_dir="r", trial_number=1)


def test_objective_comes_from_the_task_and_can_be_overridden():
    from pipeline import Sweep

    default = Sweep(task="gap").objective()
    assert (default.metric, default.direction, default.epoch_metric) == ("eval_loss", "minimize", "eval_loss")
    accuracy = Sweep(task="gap", metric="accuracy", direction="maximize").objective()
    assert (accuracy.metric, accuracy.epoch_metric) == ("accuracy", "eval_accuracy")
    assert Sweep(task="gap", metric="log_loss").objective().epoch_metric == "eval_loss"
    # A task without a validation split in its plan says what to give instead.
    with pytest.raises(ValueError, match="select_features"):
        Sweep(task="squad").base_finetune()
    with pytest.raises(ValueError, match="no FullRun plan"):
        Sweep(task="textclass").base_finetune()


def test_pruner_warmup_epochs_protects_that_many_epochs(work, tmp_path):
    """``Sweep --pruner-warmup-epochs 1``: the same bad trial survives epoch 1 and is stopped after epoch 2."""
    from pipeline.sweep import Sweep
    from train.trial import PRUNED_FILE, TrialPruned

    assert Sweep(task="gap", pruner_warmup_epochs=0).pruner_record()["kwargs"]["n_warmup_steps"] == 0
    pruner = Sweep(task="gap", pruner_startup_trials=2, pruner_warmup_epochs=1).pruner_record()
    url = f"sqlite:///{tmp_path / 'study.db'}"
    study = study_with_history(url, "warm", 0.01, pruner, epochs=2)
    bad = study.ask()
    out = tmp_path / "run"
    with pytest.raises(TrialPruned):
        fine_tune(trial_config(work, out, url, "warm", bad.number), single_process("cpu"))
    assert json.loads((out / PRUNED_FILE).read_text())["epoch"] == 2
    assert list(study.trials[bad.number].intermediate_values) == [1, 2]


def test_report_plots_trials_in_the_studys_order_whatever_the_slot_order():
    """Slots claim trials in any order (Luigi ran slot 5 first in the MPNet sweep); the history plot's
    study view must keep trial order, or its x axis shows slots and its best-so-far line is wrong."""
    import optuna

    from pipeline.sweep_report import _study_view

    study = optuna.create_study(direction="minimize")
    for value in (3.0, 1.0, 2.0):
        trial = study.ask()
        study.tell(trial, value)
    view = _study_view(study, [2, 0, 1], "minimize")  # the records, in slot order
    assert [t.value for t in view.trials] == [3.0, 1.0, 2.0]
    assert [t.number for t in view.trials] == [0, 1, 2]
