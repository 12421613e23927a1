"""Choosing on held-out data: best-epoch selection, early stopping and temperature calibration
(train --select-best / --early-stopping-patience / --calibrate)."""

from __future__ import annotations

from tasks import get_task
import json

import numpy as np
import pyarrow as pa
import pytest
import torch

from train.calibrate import fit_temperature, nll
from prep.folders import RunFolder
from train.checkpoint import CheckpointError, load_best, save_best
from train.config import TrainConfig
from train.data import FeatureSet, make_collate
from train.dist import single_process
from train.evaluation import evaluate, evaluations_since_best
from train.model import load_finetuned
from train.testing import write_feature_dir
from tasks.gap.model import synthetic_gap_table
from tests.conftest import fine_tune

LOCAL = single_process("cpu")
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.mark.fast
def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(20000, 3))
    true_t = 2.5
    probs = np.exp(logits / true_t)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = np.array([rng.choice(3, p=row) for row in probs])
    fitted = fit_temperature(logits, labels)
    assert fitted == pytest.approx(true_t, rel=0.05)
    assert nll(logits, labels, fitted) < nll(logits, labels) - 0.1
    assert nll(logits, labels, fitted) <= min(nll(logits, labels, fitted * f) for f in (0.9, 1.1))


@pytest.mark.fast
def test_fit_temperature_sharpens_an_under_confident_model_and_rejects_bad_input():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 3, size=500)
    logits = np.full((500, 3), 0.0)
    logits[np.arange(500), labels] = 0.5  # always right, far too unsure
    assert fit_temperature(logits, labels) < 0.2
    with pytest.raises(ValueError, match="labels must be in"):
        fit_temperature(logits, labels + 3)
    with pytest.raises(ValueError, match="need logits"):
        fit_temperature(logits[:10], labels)


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_encoder_dir):
    root = tmp_path_factory.mktemp("select")
    held_out = synthetic_gap_table(48, seed=1)
    # The same rule with A and B swapped in the labels: the better the model learns the training
    # rule, the worse its loss here, so the first epoch is the best and the last is not.
    labels = held_out.column("label").to_numpy()
    swapped = np.where(labels == 0, 1, np.where(labels == 1, 0, labels)).astype(np.int8)
    contrary = held_out.set_column(held_out.schema.get_field_index("label"), "label", pa.array(swapped))
    return {
        "tiny": tiny_encoder_dir,
        "gap": write_feature_dir(root / "gap", synthetic_gap_table(160), "gap", "train", 64),
        "held_out": write_feature_dir(root / "held-out", held_out, "gap", "train", 64),
        "contrary": write_feature_dir(root / "contrary", contrary, "gap", "train", 64),
    }


def config(work, out, eval_dir, **overrides) -> TrainConfig:
    values = dict(task="gap", features_dir=str(work["gap"]), run_dir=str(out), model_dir=str(work["tiny"]),
                  eval_features_dir=str(eval_dir), precision="fp32", global_batch_size=16, epochs=4, lr=2e-3,
                  log_every_n_steps=5, progress_bar=False)
    return TrainConfig(**{**values, **overrides})


def saved_eval_loss(run_dir, cfg: TrainConfig) -> float:
    model, _ = load_finetuned(run_dir, get_task("gap").train)
    collate = make_collate(get_task("gap").train, 0, cfg.pad_to_multiple_of)
    return evaluate(model, FeatureSet(cfg.eval_features_dir, "gap"), get_task("gap").train, cfg, LOCAL, collate)["eval_loss"]


def test_select_best_saves_the_epoch_with_the_lowest_eval_loss(work, tmp_path):
    cfg = config(work, tmp_path / "best", work["contrary"], select_best=True)
    metrics = fine_tune(cfg, LOCAL)
    history = [entry["eval_loss"] for entry in metrics["eval"]]
    assert len(history) == 4
    best_epoch = int(np.argmin(history)) + 1
    assert best_epoch < 4, f"the contrary eval set should make a late epoch worse: {history}"
    assert metrics["selected"]["epoch"] == best_epoch
    assert metrics["selected"]["eval_loss"] == pytest.approx(min(history))
    assert saved_eval_loss(tmp_path / "best", cfg) == pytest.approx(min(history), rel=1e-5)
    record = load_best(RunFolder(tmp_path / "best").best_checkpoint)
    assert record["epoch"] == best_epoch

    last = fine_tune(cfg.replace(run_dir=str(tmp_path / "last"), select_best=False), LOCAL)
    assert last["selected"] is None
    assert saved_eval_loss(tmp_path / "last", cfg) == pytest.approx(history[-1], rel=1e-5)


def test_early_stopping_ends_the_run_once_the_held_out_loss_stops_falling(work, tmp_path):
    """On the contrary held-out set the loss rises once the model learns the training rule: with a
    patience of 1 the run stops one evaluation after its lowest loss, keeps that epoch's weights
    under select_best, and says where it stopped in metrics.json and in its last checkpoint."""
    cfg = config(work, tmp_path / "stop", work["contrary"], epochs=8, select_best=True, early_stopping_patience=1)
    metrics = fine_tune(cfg, LOCAL)
    history = [entry["eval_loss"] for entry in metrics["eval"]]
    best_epoch = int(np.argmin(history)) + 1
    assert metrics["epochs_completed"] == len(history) == best_epoch + 1 < 8, history
    assert history[-1] >= history[best_epoch - 1]
    stopped = metrics["stopped_early"]
    assert stopped["epoch"] == best_epoch + 1 and stopped["best_epoch"] == best_epoch
    assert stopped["step"] == metrics["steps"] and stopped["patience"] == 1
    assert metrics["selected"]["epoch"] == best_epoch
    assert saved_eval_loss(tmp_path / "stop", cfg) == pytest.approx(min(history), rel=1e-5)
    saved = json.loads(torch.load(RunFolder(tmp_path / "stop").last_checkpoint, weights_only=True)["histories"])
    assert saved["stopped_early"] == stopped
    # The same run without a patience goes on to its last epoch, through the same first epochs.
    full = fine_tune(cfg.replace(run_dir=str(tmp_path / "full"), early_stopping_patience=None), LOCAL)
    assert full["epochs_completed"] == 8 and full["stopped_early"] is None
    assert [e["eval_loss"] for e in full["eval"][:len(history)]] == pytest.approx(history, rel=1e-5)


@pytest.mark.fast
def test_evaluations_since_best_counts_a_tie_as_no_improvement():
    losses = lambda *values: [{"eval_loss": v} for v in values]  # noqa: E731
    assert evaluations_since_best([]) == 0
    assert evaluations_since_best(losses(0.9, 0.8, 0.7)) == 0
    assert evaluations_since_best(losses(0.9, 0.7, 0.8, 0.75)) == 2
    assert evaluations_since_best(losses(0.7, 0.7)) == 1


@pytest.mark.fast
def test_calibrate_fits_a_temperature_that_the_saved_model_carries(work, tmp_path):
    cfg = config(work, tmp_path / "cal", work["held_out"], calibrate=True, epochs=3)
    metrics = fine_tune(cfg, LOCAL)
    calibration = metrics["calibration"]
    assert calibration["eval_rows"] == 48
    assert calibration["eval_loss_after"] <= calibration["eval_loss_before"]
    assert calibration["eval_loss_before"] == pytest.approx(metrics["eval"][-1]["eval_loss"], rel=1e-5)
    model, _ = load_finetuned(tmp_path / "cal", get_task("gap").train)
    assert model.head.temperature.item() == pytest.approx(calibration["temperature"])
    assert calibration["temperature"] != pytest.approx(1.0, abs=1e-3)
    assert saved_eval_loss(tmp_path / "cal", cfg) == pytest.approx(calibration["eval_loss_after"], rel=1e-5)
    assert json.loads((tmp_path / "cal" / "metrics.json").read_text())["calibration"] == calibration


@pytest.mark.fast
def test_selection_needs_held_out_data_and_calibration_is_for_gap(work, tmp_path):
    with pytest.raises(ValueError, match="need eval features"):
        config(work, tmp_path, work["held_out"], eval_features_dir=None, select_best=True)
    with pytest.raises(ValueError, match="early_stopping_patience needs eval features"):
        config(work, tmp_path, work["held_out"], eval_features_dir=None, early_stopping_patience=2)
    with pytest.raises(ValueError, match="early_stopping_patience must be >= 1"):
        config(work, tmp_path, work["held_out"], early_stopping_patience=0)
    with pytest.raises(ValueError, match="calibrate fits a classifier.s softmax temperature; task squad has none"):
        TrainConfig(task="squad", head="span", features_dir="f", run_dir="o", model_dir="m",
                    eval_features_dir="e", calibrate=True).for_task(get_task("squad").train)


@pytest.mark.fast
def test_best_record_round_trips_and_a_damaged_one_is_a_clear_error(tmp_path):
    path = RunFolder(tmp_path).best_checkpoint
    assert load_best(path) is None
    record = {"schema_version": 1, "model": {"w": torch.ones(2)}, "epoch": 2, "step": 10, "eval_loss": 0.5}
    save_best(path, record)
    assert load_best(path)["eval_loss"] == 0.5
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_best(path)
    with pytest.raises(ValueError, match="lacks"):
        save_best(path, {"model": {}})
