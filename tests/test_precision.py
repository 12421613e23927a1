"""Precision ``auto`` picks what the device does best and the run records the choice; attention dropout
is its own setting (0 lets CPU attention take the fused SDPA kernel)."""

from __future__ import annotations

import json

import pytest
import torch

from prep.folders import RunFolder
from tests.conftest import fine_tune
from train.config import TrainConfig, choose_precision
from train.dist import single_process
from train.model import cpu_has_native_bf16, load_encoder
from train.testing import write_feature_dir

pytestmark = [pytest.mark.fast, pytest.mark.usefixtures("one_cpu_thread")]


def test_auto_takes_fp16_on_cuda_bf16_on_a_native_bf16_cpu_and_fp32_elsewhere():
    assert choose_precision("auto", "cuda", False)[0] == "fp16"
    assert choose_precision("auto", "cpu", True)[0] == "bf16"
    assert choose_precision("auto", "cpu", False)[0] == "fp32"
    assert choose_precision("fp32", "cpu", True) == ("fp32", "asked for")
    assert choose_precision("bf16", "cuda", False) == ("bf16", "asked for")
    config = TrainConfig(task="gap", features_dir="f", run_dir="o")
    assert config.resolved("cpu", "enc", cpu_native_bf16=True).precision == "bf16"


def test_a_run_records_what_auto_chose_and_why(tmp_path, tiny_encoder_dir):
    from tasks.gap.model import synthetic_gap_table

    features = write_feature_dir(tmp_path / "gap", synthetic_gap_table(16), "gap", "train", 64)
    config = TrainConfig(task="gap", features_dir=str(features), run_dir=str(tmp_path / "run"),
                         model_dir=str(tiny_encoder_dir), global_batch_size=8, max_steps=2, progress_bar=False)
    metrics = fine_tune(config, single_process("cpu"))
    expected = "bf16" if cpu_has_native_bf16(unknown=False) else "fp32"
    recorded = json.loads(RunFolder(tmp_path / "run").train_config.read_text())
    for choice in (metrics["precision_choice"], recorded["precision_choice"]):
        assert choice["requested"] == "auto" and choice["chosen"] == expected and "auto on a CPU" in choice["why"]
    assert metrics["precision"] == recorded["precision"] == expected


def test_attention_dropout_is_set_alone(tiny_encoder_dir):
    encoder = load_encoder(tiny_encoder_dir, dropout=0.2, attention_dropout=0.0)
    assert (encoder.config.hidden_dropout_prob, encoder.config.attention_probs_dropout_prob) == (0.2, 0.0)
    with pytest.raises(ValueError, match="attention_dropout must be in"):
        TrainConfig(task="gap", features_dir="f", run_dir="o", attention_dropout=1.0)


def test_attention_dropout_names_a_new_run_folder_only_when_set():
    from pipeline import GapFineTuned

    folders = dict(features_dir="f", eval_features_dir="e")  # GAP's defaults choose on held-out data
    base = GapFineTuned(**folders)
    assert GapFineTuned(**folders, attention_dropout=None).run_dir == base.run_dir
    assert GapFineTuned(**folders, attention_dropout=0.0).run_dir != base.run_dir


def test_autocast_bf16_trains_on_this_cpu():
    """bf16 autocast runs here whether or not the matmuls are native (emulated ones are only slower)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16


def test_auto_names_a_bf16_run_folder_only_where_it_trains_in_bf16(monkeypatch):
    """Where auto still means fp32 (a CPU without native bf16) the run keeps its published name; where
    it now trains in bf16, the folder says so, so a shared runs folder never mixes the two."""
    import pipeline.finetune
    from pipeline import GapFineTuned

    monkeypatch.setattr(pipeline.finetune, "visible_cuda_devices", lambda: 0)
    monkeypatch.setattr(pipeline.finetune, "cpu_native_bf16", lambda: False)
    folders = dict(features_dir="f", eval_features_dir="e")  # GAP's defaults choose on held-out data
    legacy = GapFineTuned(**folders).run_dir
    assert legacy == GapFineTuned(**folders, precision="auto").run_dir
    monkeypatch.setattr(pipeline.finetune, "cpu_native_bf16", lambda: True)
    assert GapFineTuned(**folders).run_dir == GapFineTuned(**folders, precision="bf16").run_dir != legacy
