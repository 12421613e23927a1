"""python -m train.launch --hosts: the host map, its errors before anything starts, and the check-in."""

from __future__ import annotations

import json
import re
import socket
import threading

import pytest

from train import hosts as hosts_mod
from train import launch
from train.hosts import HostMapError, RendezvousTimeout, check_in, find_this_host, parse_host_map, read_host_map
from tasks.gap.model import synthetic_gap_table
from train.testing import write_feature_dir
from tests.test_pipeline_scheduler import free_port

pytestmark = pytest.mark.fast


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    return write_feature_dir(tmp_path_factory.mktemp("f") / "gap", synthetic_gap_table(24), "gap", "train", 64)


def write_map(tmp_path, payload, name="hosts.json"):
    path = tmp_path / name
    path.write_text(payload if isinstance(payload, str) else json.dumps(payload), encoding="utf-8")
    return path


def train_args(features, *extra):
    return ["--task", "gap", "--features", str(features), "--out", "runs/x", "--device", "cpu", *extra]


def run_main(capsys, argv, nvml=None):
    code = launch.main(argv, nvml=nvml)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_map_keeps_node_order_and_sums_processes(tmp_path):
    host_map = read_host_map(write_map(tmp_path, '{"gpu-b.example.com": 3, "gpu-a.example.com": 1}'))
    assert host_map.hosts == ["gpu-b.example.com", "gpu-a.example.com"]
    assert (host_map.world_size, host_map.rendezvous_host, host_map.node_rank("gpu-a.example.com")) == (
        4, "gpu-b.example.com", 1)


@pytest.mark.parametrize(("text", "message"), [
    ('{"a": 1,', r"not valid JSON: line 1 column 9"),
    ('["a", "b"]', r"expected a JSON object of host -> processes"),
    ("{}", r"names no host"),
    ('{"a": 0}', r"a: processes must be a whole number >= 1, got 0"),
    ('{"a": 2.5}', r"got 2.5"),
    ('{"a": true}', r"got True"),
    ('{"a": "4"}', r"got '4'"),
    ('{"a": 1, "a": 2}', r"host a is listed more than once"),
    ('{" a": 1}', r"empty or has spaces"),
    ('{"127.0.0.1": 1, "gpu-b.example.com": 2}', r"127.0.0.1 only reaches this machine"),
])
def test_bad_maps_are_errors_that_say_what_is_wrong(tmp_path, text, message):
    with pytest.raises(HostMapError, match=message):
        read_host_map(write_map(tmp_path, text))


def test_a_missing_map_file_is_named(tmp_path):
    with pytest.raises(HostMapError, match=r"--hosts .*nothere.json: no such file"):
        read_host_map(tmp_path / "nothere.json")


def test_this_host_is_found_by_name_or_address_or_given():
    here = socket.gethostname()
    remote = parse_host_map({"gpu-zz.invalid": 2, here: 1})
    assert find_this_host(remote) == here
    assert find_this_host(parse_host_map({"localhost": 1})) == "localhost"
    with pytest.raises(HostMapError, match=r"is not in hosts.json \(hosts: gpu-zz.invalid, gpu-yy.invalid\)"):
        find_this_host(parse_host_map({"gpu-zz.invalid": 2, "gpu-yy.invalid": 1}))
    both_local = parse_host_map({"127.0.0.1": 1, "localhost": 2})
    with pytest.raises(HostMapError, match=r"several entries .* name this machine \(127.0.0.1, localhost\)"):
        find_this_host(both_local)
    assert find_this_host(both_local, "localhost") == "localhost"
    with pytest.raises(HostMapError, match=r"has no entry 'node-c'"):
        find_this_host(both_local, "node-c")


def test_the_torchrun_command_carries_this_hosts_counts(tmp_path, capsys, features):
    hosts = write_map(tmp_path, {"127.0.0.1": 1, "localhost": 2})
    code, out, err = run_main(capsys, ["--hosts", str(hosts), "--host", "localhost", "--port", "29700",
                                       "--rdzv-timeout", "30", "--dry-run", "--",
                                       *train_args(features, "--global-batch-size", "12")])
    assert code == 0, err
    command = out.split()
    assert command[1:3] == ["-m", "torch.distributed.run"]
    assert {"--nnodes=2", "--node-rank=1", "--nproc-per-node=2", "--rdzv-backend=c10d",
            "--rdzv-endpoint=127.0.0.1:29700", "--local-addr=localhost", "--max-restarts=0",
            "--rdzv-conf=join_timeout=30,is_host=false"} <= set(command)
    assert command[command.index("-m", 3):][:2] == ["-m", "train"]
    assert command[-len(train_args(features)) - 2:] == [*train_args(features), "--global-batch-size", "12"]
    assert "localhost: node 1 of 2, 2 of 3 processes (127.0.0.1: 1, localhost: 2)" in err
    # node 0 hosts the rendezvous store; every host derives the same rendezvous id from the map
    code, first, _ = run_main(capsys, ["--hosts", str(hosts), "--host", "127.0.0.1", "--port", "29700",
                                       "--rdzv-timeout", "30", "--dry-run", "--",
                                       *train_args(features, "--global-batch-size", "12")])
    assert "--node-rank=0" in first.split() and "--rdzv-conf=join_timeout=30,is_host=true" in first.split()
    ids = [part for part in first.split() + command if part.startswith("--rdzv-id=")]
    assert len(ids) == 2 and ids[0] == ids[1]


@pytest.mark.parametrize(("map_payload", "launcher", "extra", "message"), [
    ({"127.0.0.1": 1, "localhost": 2}, ["--host", "localhost"], ["--global-batch-size", "16"],
     r"hosts.json gives 3 processes in all \(127.0.0.1: 1, localhost: 2\): global_batch_size 16 is not a multiple "
     r"of per_device_batch_size 5 x world_size 3"),
    ({"127.0.0.1": 1, "localhost": 2}, ["--host", "localhost", "--gpus", "3"], ["--global-batch-size", "12"],
     r"--gpus 3, but .*hosts.json gives localhost 2 processes"),
    ({"127.0.0.1": 1, "localhost": 2}, [], ["--global-batch-size", "12"], r"several entries .* pass --host"),
    ({"gpu-zz.invalid": 1}, [], ["--global-batch-size", "12"], r"this machine \(.*\) is not in .*hosts.json"),
    ('{"a": 1', [], [], r"not valid JSON"),
])
def test_wrong_launches_fail_before_anything_starts(tmp_path, capsys, monkeypatch, features, map_payload, launcher,
                                                    extra, message):
    started = []
    monkeypatch.setattr(launch, "run_child", lambda *args: started.append(args) or 0)
    monkeypatch.setattr(hosts_mod, "check_in", lambda *args: started.append(args))
    hosts = write_map(tmp_path, map_payload)
    code, _, err = run_main(capsys, ["--hosts", str(hosts), *launcher, "--", *train_args(features, *extra)])
    assert code == 2 and started == []
    assert err.startswith("python -m train.launch: error: ") and "Traceback" not in err
    assert re.search(message, err), err


def test_training_arguments_go_after_a_double_dash(capsys):
    with pytest.raises(SystemExit) as exited:
        launch.main(["--hosts", "hosts.json", "--task", "gap"])
    assert exited.value.code == 2
    assert "put the training arguments after --" in capsys.readouterr().err


def test_a_host_that_never_comes_is_named_after_the_timeout(tmp_path, capsys, features):
    """Node 0 alone: it names the host that never checked in; a host alone names node 0."""
    hosts = write_map(tmp_path, {"127.0.0.1": 1, "localhost": 2})
    port = free_port() - 1
    args = ["--hosts", str(hosts), "--port", str(port), "--rdzv-timeout", "1"]
    code, _, err = run_main(capsys, [*args, "--host", "127.0.0.1", "--", *train_args(features, "--global-batch-size", "3")])
    assert code == 3, err
    assert "rendezvous timed out after 1 s: 1 of 2 hosts never checked in: localhost (2 processes)" in err
    code, _, err = run_main(capsys, [*args, "--host", "localhost", "--", *train_args(features, "--global-batch-size", "3")])
    assert code == 3, err
    assert "127.0.0.1 (node 0, the rendezvous host) never answered" in err


def test_hosts_that_read_different_maps_are_told_so():
    port = free_port()
    mine = parse_host_map({"127.0.0.1": 1, "localhost": 2})
    theirs = parse_host_map({"127.0.0.1": 1, "localhost": 3})
    found = {}

    def serve():
        try:
            found["store"] = check_in(mine, "127.0.0.1", port, timeout_s=20)
        except Exception as err:  # noqa: BLE001 - handed to the test thread
            found["node0"] = err

    server = threading.Thread(target=serve)
    server.start()
    with pytest.raises(HostMapError, match=r'the hosts read different maps: 127.0.0.1 has \{"127.0.0.1": 1, '
                                           r'"localhost": 2\}; this host \(localhost\) has .*"localhost": 3'):
        check_in(theirs, "localhost", port, timeout_s=20)
    server.join()
    assert isinstance(found.get("node0"), HostMapError) and "localhost has" in str(found["node0"])


def test_check_in_completes_when_every_host_arrives():
    port = free_port()
    host_map = parse_host_map({"127.0.0.1": 1, "localhost": 2})
    stores = {}
    threads = [threading.Thread(target=lambda h=host: stores.__setitem__(h, check_in(host_map, h, port, 20)))
               for host in ("localhost", "127.0.0.1")]  # the client first: it waits for node 0 to come up
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(stores) == ["127.0.0.1", "localhost"]


def test_rendezvous_timeout_carries_the_missing_hosts():
    host_map = parse_host_map({"127.0.0.1": 1, "localhost": 2})
    with pytest.raises(RendezvousTimeout) as raised:
        check_in(host_map, "127.0.0.1", free_port(), timeout_s=0.5)
    assert raised.value.missing == ["localhost"]
