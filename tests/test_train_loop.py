"""The training loop end to end on CPU: DDP equivalence, mixed precision, checkpoints, real features."""

from __future__ import annotations

from tasks import get_task
import json
import logging
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tasks.gap.prep import GapPrepConfig, prepare_gap
from tasks.squad.prep import SquadPrepConfig, prepare_squad
from tests.conftest import shared_data, fine_tune
from train.__main__ import main as train_main
from prep.folders import RunFolder
from train.checkpoint import CheckpointError, load_checkpoint
from train.config import TrainConfig
from train.dist import single_process
from train import loop
from train import model as train_model
from train.loop import train
from train.model import load_finetuned
from train.testing import write_feature_dir
from tasks.gap.model import synthetic_gap_table

ROOT = Path(__file__).resolve().parents[1]
LOCAL = single_process("cpu")
GAP = get_task("gap").train


pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def work(tmp_path_factory, tiny_encoder_dir, tiny_encoder_dir_dropout):
    root = tmp_path_factory.mktemp("loop")
    return {
        "root": root,
        "tiny": tiny_encoder_dir,  # deterministic across world sizes
        "tiny_dropout": tiny_encoder_dir_dropout,  # resume must restore RNG
        "gap": write_feature_dir(root / "gap", synthetic_gap_table(160), "gap", "train", 64),
        "gap_eval": write_feature_dir(root / "gap-eval", synthetic_gap_table(40, seed=1), "gap", "train", 64),
    }


def gap_config(work, out, **overrides) -> TrainConfig:
    values = dict(task="gap", features_dir=str(work["gap"]), run_dir=str(out), model_dir=str(work["tiny"]),
                  precision="fp32", global_batch_size=16, per_device_batch_size=8, epochs=2, lr=1e-3,
                  log_every_n_steps=1, progress_bar=False)
    return TrainConfig(**{**values, **overrides})


def cli_args(config: TrainConfig) -> list[str]:
    args = ["--task", config.task, "--features", config.features_dir, "--out", config.run_dir,
            "--model", config.model_dir, "--precision", config.precision, "--head", config.head or "multiply",
            "--global-batch-size", str(config.global_batch_size), "--epochs", str(config.epochs),
            "--lr", str(config.lr), "--log-every-n-steps", str(config.log_every_n_steps), "--no-progress-bar",
            "--save-every-n-steps", str(config.save_every_n_steps or 0)]
    if config.per_device_batch_size:
        args += ["--per-device-batch-size", str(config.per_device_batch_size)]
    if config.max_steps:
        args += ["--max-steps", str(config.max_steps)]
    if not config.length_bucketing:
        args.append("--no-bucketing")
    return args


def subprocess_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def losses(out_dir) -> torch.Tensor:
    metrics = json.loads((Path(out_dir) / "metrics.json").read_text())
    return torch.tensor([entry["loss"] for entry in metrics["train_loss_history"]])


def test_world_size_2_on_gloo_matches_world_size_1(work, tmp_path):
    """Same global batch (16): ws1 = 2 micro-batches of 8, ws2 = 2 micro-batches of 4 per rank (no_sync on the first)."""
    config = gap_config(work, tmp_path / "ws1", max_steps=6, length_bucketing=False)
    train(config, get_task(config.task).train, LOCAL)
    ws2 = config.replace(run_dir=str(tmp_path / "ws2"), world_size=2, per_device_batch_size=4)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               "-m", "train", *cli_args(ws2)]
    result = subprocess.run(command, env=subprocess_env(), capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ws2" / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["micro_batch_size"], metrics["accumulation_steps"]) == (2, 4, 2)
    assert len(losses(tmp_path / "ws1")) == 6
    torch.testing.assert_close(losses(tmp_path / "ws2"), losses(tmp_path / "ws1"), rtol=1e-4, atol=1e-5)
    one, two = load_finetuned(tmp_path / "ws1", GAP)[0], load_finetuned(tmp_path / "ws2", GAP)[0]
    torch.testing.assert_close(two.state_dict(), one.state_dict(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_mixed_precision_on_cpu_lowers_the_loss(work, tmp_path, precision, monkeypatch, caplog):
    monkeypatch.setattr(train_model, "cpu_has_native_bf16", lambda: False)  # both are then emulated: the log says so
    with caplog.at_level(logging.WARNING, logger="train.loop"):
        metrics = fine_tune(gap_config(work, tmp_path / precision, precision=precision, epochs=3), LOCAL)
    assert train_model.precision_warning(precision, "cpu") in caplog.messages
    history = losses(tmp_path / precision)
    assert torch.isfinite(history).all()
    assert history[-3:].mean() < history[:3].mean() - 0.2
    saved = load_checkpoint(RunFolder(tmp_path / precision).last_checkpoint)
    if precision == "fp16":  # GradScaler ran on CPU and its state is checkpointed
        assert saved["scaler"]["scale"] > 1
    else:
        assert saved["scaler"] == {}
    assert metrics["throughput"]["sequences_per_second"] > 0


@pytest.mark.fast
def test_precision_warning_only_for_an_emulated_half_precision(monkeypatch):
    monkeypatch.setattr(train_model, "cpu_has_native_bf16", lambda: False)
    assert "emulated" in train_model.precision_warning("bf16", "cpu")
    assert "fp16 on CPU" in train_model.precision_warning("fp16", "cpu")
    monkeypatch.setattr(train_model, "cpu_has_native_bf16", lambda: True)
    assert train_model.precision_warning("bf16", "cpu") is None
    assert "fp16 on CPU" in train_model.precision_warning("fp16", "cpu")
    assert train_model.precision_warning("fp32", "cpu") is None
    assert train_model.precision_warning("bf16", "cuda") is None
    assert train_model.precision_warning("fp16", "cuda") is None


def test_sigkill_mid_epoch_then_resume_equals_unbroken_run(work, tmp_path):
    base = gap_config(work, tmp_path / "unbroken", model_dir=str(work["tiny_dropout"]), epochs=3,
                      per_device_batch_size=4, save_every_n_steps=3, log_every_n_steps=4)
    killed = base.replace(run_dir=str(tmp_path / "killed"))
    command = [sys.executable, "-m", "train"]
    unbroken_log = open(tmp_path / "unbroken.log", "w+")
    unbroken = subprocess.Popen(command + cli_args(base), env=subprocess_env(), stderr=unbroken_log)
    victim = subprocess.Popen(command + cli_args(killed), env=subprocess_env(), stderr=subprocess.DEVNULL)
    checkpoint = RunFolder(killed.run_dir).last_checkpoint
    deadline = time.monotonic() + 180
    while not checkpoint.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "metrics.json").exists()
    saved = load_checkpoint(checkpoint)
    assert saved["step_in_epoch"] > 0, "the kill should land mid-epoch"
    assert len(saved["rng"]) == 1 and "micro_batches_consumed" not in saved

    resumed = subprocess.run(command + cli_args(killed) + ["--resume"], env=subprocess_env(),
                             capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert unbroken.wait(timeout=180) == 0, (tmp_path / "unbroken.log").read_text()[-3000:]
    unbroken_log.close()
    a, _ = load_finetuned(tmp_path / "unbroken", GAP)
    b, _ = load_finetuned(tmp_path / "killed", GAP)
    torch.testing.assert_close(b.state_dict(), a.state_dict())
    metrics = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["resumed_from_step"] == saved["step"]
    assert json.loads((tmp_path / "unbroken" / "metrics.json").read_text())["resumed_from_step"] is None


# python -m train whose checkpoint write at step 6 stops half-way: the file is half its size, then the
# process waits (saying so in a file) to be killed there.
_HALTING_WRITER = """
import sys, time
from pathlib import Path
import torch
save = torch.save
def save_then_halt(payload, target, *args, **kwargs):
    save(payload, target, *args, **kwargs)
    if Path(target).name.startswith(".last.pt.tmp-") and payload["step"] >= 6:
        with open(target, "r+b") as handle:
            handle.truncate(handle.seek(0, 2) // 2)
        Path(sys.argv[1]).write_text(str(target))
        time.sleep(600)
torch.save = save_then_halt
from train.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def test_sigkill_during_a_checkpoint_write_then_resume_leaves_no_temp(work, tmp_path):
    """A run killed while writing last.pt leaves .last.pt.tmp-<pid> beside the previous last.pt;
    the resume continues from that one and deletes the temp (issue 27, 4)."""
    config = gap_config(work, tmp_path / "killed", epochs=1, save_every_n_steps=3, log_every_n_steps=3)
    halted = tmp_path / "halted"
    victim = subprocess.Popen([sys.executable, "-c", _HALTING_WRITER, str(halted), *cli_args(config)],
                              env=subprocess_env(), stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not halted.exists() and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert halted.exists(), "the run never reached its halted write"
    folder = RunFolder(config.run_dir)
    temp = Path(halted.read_text())
    assert temp.parent == folder.checkpoints and temp.name == f".last.pt.tmp-{victim.pid}" and temp.stat().st_size > 0
    assert torch.load(folder.last_checkpoint, weights_only=True)["step"] == 3  # the write before is whole

    resumed = subprocess.run([sys.executable, "-m", "train", *cli_args(config), "--resume"], env=subprocess_env(),
                             capture_output=True, text=True, timeout=180)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    metrics = json.loads(folder.metrics.read_text())
    assert metrics["resumed_from_step"] == 3 and metrics["steps"] == 10
    assert not [p.name for p in folder.path.rglob(".*") if ".tmp-" in p.name or ".old-" in p.name]


class _Crash(Exception):
    pass


def test_a_resumed_run_reports_the_whole_runs_histories(work, tmp_path, monkeypatch):
    """metrics.json of a run broken after epoch 1's evaluation and resumed lists every logged loss
    and every evaluation, equal to the unbroken run's, and a wall time that counts both processes."""
    base = gap_config(work, tmp_path / "unbroken", eval_features_dir=str(work["gap_eval"]), epochs=3,
                      save_every_n_steps=4, log_every_n_steps=2)
    unbroken = fine_tune(base, LOCAL)
    broken = base.replace(run_dir=str(tmp_path / "broken"))
    original = loop.save_checkpoint

    def crash_at_step_12(run):
        if run.step >= 12:
            time.sleep(1.5)  # the broken process's time up to its last checkpoint: at least 1.5 s
        original(run)
        if run.step >= 12:
            raise _Crash

    monkeypatch.setattr(loop, "save_checkpoint", crash_at_step_12)
    with pytest.raises(_Crash):
        fine_tune(broken, LOCAL)
    monkeypatch.setattr(loop, "save_checkpoint", original)
    resumed = fine_tune(broken.replace(resume=True), LOCAL)
    assert resumed["resumed_from_step"] == 12 and resumed["steps"] == unbroken["steps"] == 30
    assert [r["step"] for r in resumed["train_loss_history"]] == [r["step"] for r in unbroken["train_loss_history"]]
    assert [r["loss"] for r in resumed["train_loss_history"]] == \
        pytest.approx([r["loss"] for r in unbroken["train_loss_history"]], rel=1e-5)
    assert [(r["epoch"], r["step"]) for r in resumed["eval"]] == [(1, 10), (2, 20), (3, 30)]
    assert [r["eval_loss"] for r in resumed["eval"]] == \
        pytest.approx([r["eval_loss"] for r in unbroken["eval"]], rel=1e-5)
    written = json.loads((tmp_path / "broken" / "metrics.json").read_text())
    assert written["eval"] == resumed["eval"] and written["train_loss_history"] == resumed["train_loss_history"]
    assert written["wall_seconds"] >= written["wall_seconds_this_process"] + 1.5
    assert unbroken["wall_seconds"] == pytest.approx(unbroken["wall_seconds_this_process"], abs=0.01)


@pytest.mark.fast
def test_resume_errors_are_clear(work, tmp_path, capsys):
    out = tmp_path / "run"
    args = cli_args(gap_config(work, out, max_steps=2))
    assert train_main(args + ["--resume"]) == 2
    assert "no checkpoint at" in capsys.readouterr().err

    assert train_main(args) == 0
    assert train_main(args) == 2  # a finished run's folder is not silently overwritten
    assert "pass --resume" in capsys.readouterr().err

    with pytest.raises(CheckpointError, match="different run.*lr"):
        fine_tune(gap_config(work, out, max_steps=2, lr=5e-4, resume=True), LOCAL)

    path = RunFolder(out).last_checkpoint
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        fine_tune(gap_config(work, out, max_steps=2, resume=True), LOCAL)
    path.write_bytes(b"not a checkpoint")
    assert train_main(args + ["--resume"]) == 2
    assert "corrupted or truncated" in capsys.readouterr().err


@pytest.fixture(scope="module")
def real_gap(tmp_path_factory):
    source = shared_data("gap/gap-validation.tsv")
    out = tmp_path_factory.mktemp("real-gap") / "features"
    prepare_gap(source, out, config=GapPrepConfig(max_seq_length=128), nproc=1)
    return out


@pytest.fixture(scope="module")
def real_gap_subset(real_gap, tmp_path_factory):
    """The first 48 real GAP features: small enough for a tiny model to fit in a few steps."""
    from prep.features import open_features

    table = open_features(real_gap).slice(0, 48)
    return write_feature_dir(tmp_path_factory.mktemp("real-gap-48"), table, "gap", "validation", 128)


@pytest.mark.parametrize("head", ["concat", "multiply", "segment"])
def test_gap_heads_train_on_real_gap_features(work, real_gap_subset, tmp_path, head):
    """Each head fits 48 real prep rows (a tiny random BERT cannot generalise on real GAP, so the
    eval set here is the training set and only the fit is asserted; held-out accuracy is below)."""
    config = gap_config(work, tmp_path / head, features_dir=str(real_gap_subset),
                        eval_features_dir=str(real_gap_subset), head=head, epochs=6, log_every_n_steps=3, lr=2e-3)
    metrics = train(config, get_task(config.task).train, LOCAL)
    assert torch.isfinite(losses(tmp_path / head)).all()
    evals = metrics["eval"]
    assert len(evals) == 6 and evals[-1]["eval_rows"] == 48
    assert evals[-1]["eval_loss"] < evals[0]["eval_loss"]
    model, saved = load_finetuned(tmp_path / head, GAP)
    assert (saved["head"], saved["max_seq_length"]) == (head, 128)
    assert model.encoder.config.type_vocab_size == (4 if head == "segment" else 2)


@pytest.fixture(scope="module")
def synthetic_split(work):
    """320 training rows and 60 held-out rows (another seed) of the learnable synthetic GAP task."""
    root = work["root"]
    return (write_feature_dir(root / "gap-320", synthetic_gap_table(320), "gap", "train", 64),
            write_feature_dir(root / "gap-held-out", synthetic_gap_table(60, seed=1), "gap", "validation", 64))


@pytest.mark.parametrize("head", ["concat", "multiply", "segment"])
def test_gap_heads_generalise_to_held_out_rows(work, synthetic_split, tmp_path, head):
    """Accuracy on rows the model never trained on, well above the 1/3 of guessing (labels are uniform)."""
    train_dir, held_out = synthetic_split
    config = gap_config(work, tmp_path / head, features_dir=str(train_dir), eval_features_dir=str(held_out),
                        head=head, epochs=6, global_batch_size=16, per_device_batch_size=16, lr=2e-3,
                        log_every_n_steps=5)
    evals = train(config, get_task(config.task).train, LOCAL)["eval"]
    assert [entry["eval_rows"] for entry in evals] == [60] * 6
    assert evals[-1]["eval_accuracy"] >= 0.6, evals
    assert evals[-1]["eval_loss"] < math.log(3), evals  # better than the uniform guess's log loss


def test_squad_trains_on_real_squad_features(work, tmp_path):
    source = shared_data("squad/dev-v1.1.json")
    data = json.loads(source.read_text())
    data["data"] = [{**data["data"][0], "paragraphs": data["data"][0]["paragraphs"][:6]}]
    small = tmp_path / "squad-small.json"
    small.write_text(json.dumps(data))
    features = {}
    for split in ("train", "eval"):
        features[split] = tmp_path / f"squad-{split}"
        prepare_squad(small, features[split], None, SquadPrepConfig(max_seq_length=384, split=split), nproc=1)
    config = TrainConfig(task="squad", head="span", features_dir=str(features["train"]),
                         eval_features_dir=str(features["eval"]), run_dir=str(tmp_path / "out"),
                         model_dir=str(work["tiny"]), precision="bf16", global_batch_size=8, max_steps=6,
                         lr=2e-3, log_every_n_steps=1, progress_bar=False)
    metrics = train(config, get_task(config.task).train, LOCAL)
    history = losses(tmp_path / "out")
    assert torch.isfinite(history).all() and history[-2:].mean() < history[:2].mean()
    assert metrics["throughput"]["padding_fraction"] < 0.5  # rows are padded to the batch, not to 384
    assert metrics["final_eval"]["eval_rows"] > 0
    model, saved = load_finetuned(tmp_path / "out", get_task("squad").train)
    assert saved["max_seq_length"] == 384
    from tasks.squad.model import collate_squad
    from train.data import FeatureSet

    batch = collate_squad(FeatureSet(features["eval"]).__getitems__([0, 1]))
    with torch.no_grad():
        start, end = model(**batch)
    assert start.shape == end.shape == batch["input_ids"].shape


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (fused AdamW, fp16 GradScaler on cuda)")
def test_fp16_on_cuda(work, tmp_path):
    from train.dist import init_distributed

    env = init_distributed("cuda", environ={})
    metrics = fine_tune(gap_config(work, tmp_path / "cuda", precision="fp16", max_steps=6), env)
    assert metrics["device"].startswith("cuda") and torch.isfinite(losses(tmp_path / "cuda")).all()


@pytest.mark.fast
def test_nvtx_ranges_and_a_real_profiler_plug_into_the_loop(work, tmp_path):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fine_tune(gap_config(work, tmp_path / "prof", max_steps=3, nvtx=True), LOCAL, profiler=prof)
    names = {event.key for event in prof.key_averages()}
    assert {"data_wait", "forward", "backward", "optimizer_step"} <= names


def test_compile_trains_the_same_state_dict_keys(work, tmp_path, monkeypatch):
    """--compile goes through nn.Module.compile (in place): checkpoints and the saved model keep their keys.
    Dynamo traces the real model here; the "eager" backend spares the CPU inductor's C++ build."""
    compiled = []
    original = torch.nn.Module.compile

    def eager_compile(module, *args, **kwargs):
        compiled.append(type(module).__name__)
        return original(module, *args, **{**kwargs, "backend": "eager"})

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    metrics = fine_tune(gap_config(work, tmp_path / "compiled", max_steps=2, compile=True), LOCAL)
    assert len(compiled) == 1 and metrics["steps"] == 2 and torch.isfinite(losses(tmp_path / "compiled")).all()
    saved = load_checkpoint(RunFolder(tmp_path / "compiled").last_checkpoint)["model"]
    assert not any("_orig_mod" in key for key in saved)
    model, _ = load_finetuned(tmp_path / "compiled", GAP)  # strict loads: the same keys as an uncompiled run's
    assert model.task == "gap"
