"""Two torchrun agents on loopback, 1 + 2 processes (gloo, c10d), started by python -m train.launch --hosts:
world size 3 takes the same steps as world size 1 at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tasks.gap.model import synthetic_gap_table
from train.config import TrainConfig
from train.dist import single_process
from train.testing import write_feature_dir
from tests.test_pipeline_scheduler import free_port
from tests.conftest import fine_tune

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def losses(run_dir: Path) -> torch.Tensor:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    return torch.tensor([entry["loss"] for entry in metrics["train_loss_history"]])


def test_two_hosts_with_1_and_2_processes_match_world_size_1(tmp_path, tiny_encoder_dir):
    tiny = tiny_encoder_dir
    features = write_feature_dir(tmp_path / "gap", synthetic_gap_table(96), "gap", "train", 64)
    common = dict(task="gap", features_dir=str(features), model_dir=str(tiny), precision="fp32", global_batch_size=12,
                  max_steps=4, lr=1e-3, length_bucketing=False, log_every_n_steps=1, progress_bar=False, device="cpu")
    fine_tune(TrainConfig(**common, run_dir=str(tmp_path / "ws1"), per_device_batch_size=6), single_process("cpu"))

    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"127.0.0.1": 1, "localhost": 2}))  # node 0: 1 process; node 1: 2
    train_args = ["--task", "gap", "--features", str(features), "--model", str(tiny), "--precision", "fp32",
                  "--global-batch-size", "12", "--per-device-batch-size", "2", "--max-steps", "4", "--lr", "1e-3",
                  "--no-bucketing", "--log-every-n-steps", "1", "--no-progress-bar", "--device", "cpu",
                  "--out", str(tmp_path / "ws3")]
    port = free_port() - 1  # the rendezvous on PORT, the check-in on PORT + 1
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    agents = [subprocess.Popen([sys.executable, "-m", "train.launch", "--hosts", str(hosts), "--host", host,
                                "--port", str(port), "--rdzv-timeout", "120", "--", *train_args],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
              for host in ("localhost", "127.0.0.1")]
    try:
        logs = [agent.communicate(timeout=240)[0] for agent in agents]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
    assert [agent.returncode for agent in agents] == [0, 0], "\n----\n".join(log[-3000:] for log in logs)
    assert "localhost: node 1 of 2, 2 of 3 processes" in logs[0] and "127.0.0.1: node 0 of 2, 1 of 3" in logs[1]
    metrics = json.loads((tmp_path / "ws3" / "metrics.json").read_text())
    assert (metrics["world_size"], metrics["micro_batch_size"], metrics["accumulation_steps"]) == (3, 2, 2)
    assert len(losses(tmp_path / "ws1")) == 4
    torch.testing.assert_close(losses(tmp_path / "ws3"), losses(tmp_path / "ws1"), rtol=1e-4, atol=1e-5)
