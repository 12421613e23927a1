"""GPU choice (train.gpus, python -m train.launch --gpus N) against a fake NVML."""

from __future__ import annotations

import json

import pytest

from train import launch
from train.gpus import GpuChoiceError, GpuInfo, choose_gpus, claimed_gpus, list_gpus, select_gpus
from tasks.gap.model import synthetic_gap_table
from train.testing import write_feature_dir

pytestmark = pytest.mark.fast

GIB = 1 << 30


class FakeNvml:
    """The pynvml calls train.gpus makes, over a list of (name, used GiB, total GiB)."""

    class NVMLError(Exception):
        pass

    def __init__(self, devices=None, driver=True):
        self.devices, self.driver, self.open = devices or [], driver, 0

    def nvmlInit(self):  # noqa: N802 - pynvml's names
        if not self.driver:
            raise self.NVMLError("NVML Shared Library Not Found")
        self.open += 1

    def nvmlShutdown(self):  # noqa: N802
        self.open -= 1

    def nvmlDeviceGetCount(self):  # noqa: N802
        return len(self.devices)

    def nvmlDeviceGetHandleByIndex(self, index):  # noqa: N802
        return index

    def nvmlDeviceGetName(self, handle):  # noqa: N802
        return self.devices[handle][0].encode()  # older pynvml returns bytes

    def nvmlDeviceGetMemoryInfo(self, handle):  # noqa: N802
        _, used, total = self.devices[handle]
        return type("Memory", (), {"used": int(used * GIB), "total": int(total * GIB), "free": int((total - used) * GIB)})


FOUR = [("H100", 30.0, 80.0), ("H100", 0.5, 80.0), ("H100", 70.0, 80.0), ("H100", 0.5, 80.0)]


def test_the_least_used_gpus_are_chosen_in_index_order():
    nvml = FakeNvml(FOUR)
    gpus = list_gpus(nvml)
    assert nvml.open == 0  # shut down again
    assert [(g.index, g.name, g.memory_used_bytes) for g in gpus][:2] == [(0, "H100", 30 * GIB), (1, "H100", GIB // 2)]
    assert [g.index for g in choose_gpus(gpus, 2)] == [1, 3]
    assert [g.index for g in choose_gpus(gpus, 3)] == [0, 1, 3]
    # equal memory: the lower index wins
    assert [g.index for g in choose_gpus([GpuInfo(i, "A", GIB, 8 * GIB) for i in range(3)], 2)] == [0, 1]
    with pytest.raises(GpuChoiceError, match=r"5 GPU\(s\) asked for but this machine has 4: GPU 0 \(H100, 30,720 of"):
        choose_gpus(gpus, 5)


def test_select_sets_cuda_visible_devices_and_says_which():
    environ = {}
    line = select_gpus(2, environ, FakeNvml(FOUR))
    assert environ == {"CUDA_VISIBLE_DEVICES": "1,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert line == ("GPUs: chose GPU 1 (H100, 512 of 81,920 MiB in use), GPU 3 (H100, 512 of 81,920 MiB in use) "
                    "(least memory in use); CUDA_VISIBLE_DEVICES=1,3")
    preset = {"CUDA_VISIBLE_DEVICES": "2"}
    assert "was set already; kept" in select_gpus(1, preset, FakeNvml(FOUR)) and preset == {"CUDA_VISIBLE_DEVICES": "2"}
    with pytest.raises(GpuChoiceError, match="lists 1"):
        select_gpus(2, preset, FakeNvml(FOUR))
    with pytest.raises(GpuChoiceError, match="NVML is not available on this machine"):
        select_gpus(1, {}, FakeNvml(driver=False))


def test_concurrent_launches_claim_different_gpus_and_wait_when_none_is_free(tmp_path):
    import threading

    first, second, third, said = {}, {}, {}, []
    with claimed_gpus(2, tmp_path / "claims", first, FakeNvml(FOUR)) as line:
        assert first["CUDA_VISIBLE_DEVICES"] == "1,3" and line.startswith("GPUs: claimed GPU 1 (H100")
        with claimed_gpus(2, tmp_path / "claims", second, FakeNvml(FOUR)):
            assert second["CUDA_VISIBLE_DEVICES"] == "0,2"  # the least used of those still free
            # All four held: a third launch waits until the first block ends, then takes its GPUs.
            claim = claimed_gpus(2, tmp_path / "claims", third, FakeNvml(FOUR), poll_s=0.02, say=said.append)
            waiter = threading.Thread(target=claim.__enter__)
            waiter.start()
            waiter.join(0.3)
            assert waiter.is_alive() and "CUDA_VISIBLE_DEVICES" not in third
            assert said == [f"GPUs: waiting for 2 of 4 to be free of other launches (claims in {tmp_path / 'claims'})"]
    waiter.join(5)
    assert not waiter.is_alive() and third["CUDA_VISIBLE_DEVICES"] == "1,3"
    claim.__exit__(None, None, None)
    with pytest.raises(GpuChoiceError, match="5 GPU"):
        with claimed_gpus(5, tmp_path / "claims", {}, FakeNvml(FOUR)):
            pass
    preset = {"CUDA_VISIBLE_DEVICES": "2"}  # the user's choice: kept, nothing claimed
    with claimed_gpus(1, tmp_path / "none", preset, FakeNvml(FOUR)) as line:
        assert "was set already; kept" in line and not (tmp_path / "none").exists()


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return write_feature_dir(tmp_path_factory.mktemp("f") / "gap", synthetic_gap_table(24), "gap", "train", 64)


def plan(argv, features, nvml, environ=None, train_args=()):
    options = launch.build_parser().parse_args(argv)
    return launch.plan_launch(options, ["--task", "gap", "--features", str(features), "--out", "x",
                                        "--global-batch-size", "12", *train_args],
                              environ=environ or {}, nvml=nvml, python="py")


def test_launcher_gpus_flag_runs_that_many_processes_on_the_chosen_gpus(features):
    chosen = plan(["--gpus", "2"], features, FakeNvml(FOUR))
    assert chosen.command == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "train",
                              "--task", "gap", "--features", str(features), "--out", "x", "--global-batch-size", "12"]
    assert chosen.env == {"CUDA_VISIBLE_DEVICES": "1,3", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert "CUDA_VISIBLE_DEVICES=1,3" in chosen.notes[0]
    # no count: every GPU; a CPU-only machine: one CPU process, said so
    assert "--nproc-per-node=4" in plan([], features, FakeNvml(FOUR)).command
    cpu = plan([], features, FakeNvml(driver=False))
    assert cpu.command[1:3] == ["-m", "train"] and cpu.env == {} and "on CPU (gloo)" in cpu.notes[0]
    with pytest.raises(launch.LaunchError, match="NVML is not available"):
        plan(["--gpus", "2"], features, FakeNvml(driver=False))
    # --device cpu: --gpus counts CPU processes, and the launcher says no GPU is used
    on_cpu = plan(["--gpus", "2"], features, FakeNvml(FOUR), train_args=("--device", "cpu"))
    assert "--nproc-per-node=2" in on_cpu.command and on_cpu.env == {}
    assert on_cpu.notes == ["--device cpu: --gpus 2 runs 2 CPU process(es) (gloo); no GPU is used"]
    with pytest.raises(launch.LaunchError, match=r"5 GPU\(s\) asked for but this machine has 4"):
        plan(["--gpus", "5"], features, FakeNvml(FOUR))
    with pytest.raises(launch.LaunchError, match=r"--gpus must be >= 1, got 0"):
        plan(["--gpus", "0"], features, FakeNvml(FOUR))


def test_with_a_host_map_this_hosts_count_picks_its_gpus(tmp_path, features):
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"127.0.0.1": 2, "localhost": 1}))
    chosen = plan(["--hosts", str(hosts), "--host", "127.0.0.1"], features, FakeNvml(FOUR))
    assert "--nproc-per-node=2" in chosen.command and chosen.env["CUDA_VISIBLE_DEVICES"] == "1,3"
    with pytest.raises(launch.LaunchError, match=r"2 GPU\(s\) asked for but this machine has 1"):
        plan(["--hosts", str(hosts), "--host", "127.0.0.1"], features, FakeNvml(FOUR[:1]))


def test_two_finetuned_tasks_on_one_gpu_machine_train_on_different_gpus(tmp_path, monkeypatch, capsys):
    import functools

    import pipeline.finetune as finetune

    monkeypatch.setattr(finetune, "visible_cuda_devices", lambda: 4)
    monkeypatch.setattr(finetune, "claimed_gpus", functools.partial(claimed_gpus, nvml=FakeNvml(FOUR)))
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    common = dict(task="gap", features_dir=str(tmp_path / "f"), runs_dir=str(tmp_path / "runs"), world_size=2)
    one, two = finetune.FineTuned(**common, lr=1e-4), finetune.FineTuned(**common, lr=2e-4)
    with one._claimed_gpus() as env_one, two._claimed_gpus() as env_two:
        assert (env_one["CUDA_VISIBLE_DEVICES"], env_two["CUDA_VISIBLE_DEVICES"]) == ("1,3", "0,2")
    assert "FineTuned: GPUs: claimed GPU 1 (H100" in capsys.readouterr().out
    with finetune.FineTuned(**common, device="cpu")._claimed_gpus() as env:
        assert env is None  # a CPU run inherits this process's environment
    monkeypatch.setattr(finetune, "claimed_gpus", functools.partial(claimed_gpus, nvml=FakeNvml(driver=False)))
    with one._claimed_gpus() as env:
        assert env is None and "GPUs not claimed: NVML is not available" in capsys.readouterr().out
