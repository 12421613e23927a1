"""profiling/: step-time split, back-end choice, the nsys command, scaling table, and the Profile stage end to end."""

from __future__ import annotations

import json
import sqlite3

import pytest

from profiling import nsys, run
from profiling.intervals import intersect, merge, peel, subtract, total
from profiling.scaling import scaling_table, skip_reason
from profiling.timeline import CATEGORIES, RankTimeline, split_step_time
from tests.conftest import luigi_config

RANGES = ("data_wait", "forward", "backward", "optimizer_step")


# --- the split ------------------------------------------------------------------------------------
@pytest.mark.fast
def test_interval_helpers():
    assert merge([(5, 6), (0, 2), (1, 3), (4, 4)]) == [(0, 3), (5, 6)]
    assert intersect([(0, 10)], [(2, 3), (5, 12)]) == [(2, 3), (5, 10)]
    assert subtract([(0, 10)], [(2, 3), (5, 12)]) == [(0, 2), (3, 5)]
    assert total([(0, 2), (1, 3)]) == 3
    assert peel([(0, 10)], [("a", [(0, 4)]), ("b", [(2, 6)])]) == {"a": 4, "b": 2, "other": 4}


def two_steps(device="cpu") -> RankTimeline:
    """Two 100 us steps: data 10, forward 30, backward 40 (all-reduce 50-80 inside it), optimizer 15, 5 other."""
    ranges = {name: [] for name in RANGES}
    compute, comm = [], []
    for t0 in (0.0, 100.0):
        ranges["data_wait"].append((t0, t0 + 10))
        ranges["forward"].append((t0 + 10, t0 + 40))
        ranges["backward"].append((t0 + 40, t0 + 80))
        ranges["optimizer_step"].append((t0 + 80, t0 + 95))
        compute += [(t0 + 12, t0 + 38, t0 + 12), (t0 + 40, t0 + 70, t0 + 40), (t0 + 81, t0 + 94, t0 + 81)]
        comm.append((t0 + 50, t0 + 80))  # 20 us hidden under backward compute, 10 us exposed
    return RankTimeline(0, device, [(0.0, 100.0), (100.0, 200.0)], ranges, compute, comm, {"gloo:all_reduce": 2})


@pytest.mark.fast
def test_split_gives_every_instant_to_one_category():
    split = split_step_time(two_steps())
    assert split["steps"] == 2 and split["step_ms"] == pytest.approx(0.1)
    us = {name: value * 1e3 for name, value in split["split_ms"].items()}  # ms/step -> us/step
    assert us == pytest.approx({"data_wait": 10, "forward": 30, "backward": 30, "optimizer_step": 15,
                                "communication": 10, "other": 5})
    assert sum(split["shares"].values()) == pytest.approx(1.0)
    comm = split["communication"]
    assert comm["busy_ms"] * 1e3 == pytest.approx(30) and comm["share_of_step"] == pytest.approx(0.3)
    assert comm["overlap_with_compute"] == pytest.approx(20 / 30)
    assert comm["overlap_with_forward_backward"] == pytest.approx(1.0)
    assert comm["exposed_ms"] * 1e3 == pytest.approx(10)


# --- back-end choice and the nsys command -----------------------------------------------------------
@pytest.mark.fast
def test_nsys_is_chosen_only_with_nsys_and_cuda(monkeypatch):
    assert run.choose_backend("auto", "/opt/nsys/bin/nsys", 1)[0] == "nsys"
    assert run.choose_backend("auto", None, 1) == ("torch", "torch.profiler: no nsys")
    assert run.choose_backend("auto", "/opt/nsys/bin/nsys", 0) == ("torch", "torch.profiler: no CUDA device")
    assert run.choose_backend("auto", None, 0)[0] == "torch"
    assert run.choose_backend("torch", "/opt/nsys/bin/nsys", 8)[0] == "torch"
    with pytest.raises(ValueError, match="missing: nsys"):
        run.choose_backend("nsys", None, 1)

    monkeypatch.setattr(nsys, "NSYS_SEARCH_GLOBS", ())
    monkeypatch.setattr(nsys.shutil, "which", lambda name: None)
    assert nsys.find_nsys() is None
    monkeypatch.setattr(nsys.shutil, "which", lambda name: f"/usr/bin/{name}")
    assert nsys.find_nsys() == "/usr/bin/nsys"

    # The Luigi task resolves the same way (its hash carries the result): probe patched both ways.
    import pipeline.profile as profile_task

    task = profile_task.Profile(task="gap")
    monkeypatch.setattr(profile_task, "visible_cuda_devices", lambda: 1)
    assert task._resolved_backend() == "nsys" and task.resources == {"gpu": 1}
    with_nsys_dir = task.out_dir
    monkeypatch.setattr(nsys.shutil, "which", lambda name: None)
    assert task._resolved_backend() == "torch" and task.out_dir != with_nsys_dir
    monkeypatch.setattr(nsys.shutil, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(profile_task, "visible_cuda_devices", lambda: 0)
    assert task._resolved_backend() == "torch" and task.resources == {}


def test_any_failure_of_the_nsys_path_falls_back_to_torch_profiler(monkeypatch, tmp_path):
    """A machine whose nsys writes no usable report (the lent GPU machine's): auto says so and uses torch."""
    import subprocess

    from profiling.config import ProfileConfig

    def broken_export(*args):
        raise subprocess.CalledProcessError(1, ["nsys", "export"], stderr=b"cannot make a report")

    monkeypatch.setattr(run.nsys_path, "find_nsys", lambda: "/opt/nsight/nsys")
    monkeypatch.setattr(run, "_profile_nsys", broken_export)
    monkeypatch.setattr(run, "_profile_torch", lambda *args: ([two_steps("cuda")], [], {"traces": []}))
    config = ProfileConfig(task="gap", model_dir=str(tmp_path), backend="auto")
    recorded = run._record(config, tmp_path, tmp_path, 1, {}, "python", lambda message, percent: None)
    assert recorded["backend"]["backend"] == "torch" and "CalledProcessError" in recorded["backend"]["nsys"]["error"]
    assert recorded["notes"][0].startswith("nsys could not produce a report here, so torch.profiler was used")
    with pytest.raises(subprocess.CalledProcessError):  # asked for by name, nsys's failure is the answer
        run._record(config.__class__(**{**config.to_dict(), "backend": "nsys"}), tmp_path, tmp_path, 1, {}, "python",
                    lambda message, percent: None)


@pytest.mark.fast
def test_nsys_command_wraps_each_rank():
    worker = ["/py", "-m", "profiling.worker", "--backend", "cuda-range", "--", "--task", "gap"]
    one = nsys.build_nsys_command("/bin/nsys", "/runs/p", worker, 1, "/py")
    assert one == ["/bin/nsys", "profile", "-t", "cuda,nvtx,osrt,cublas,cudnn", "--capture-range=cudaProfilerApi",
                   "--capture-range-end=stop", "-o", "/runs/p/rank%q{RANK}", *worker]
    two = nsys.build_nsys_command("/bin/nsys", "/runs/p", worker, 2, "/py")
    assert two == ["/py", "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "--no-python", *one]


@pytest.mark.fast
def test_cuda_profiler_window_brackets_the_active_steps(monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    monkeypatch.setattr(torch.cuda.profiler, "start", lambda: calls.append("start"))
    monkeypatch.setattr(torch.cuda.profiler, "stop", lambda: calls.append("stop"))
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda name: calls.append(f"push {name}"))
    monkeypatch.setattr(torch.cuda.nvtx, "range_pop", lambda: calls.append("pop"))
    with nsys.CudaProfilerWindow(warmup_steps=2, active_steps=2) as window:
        for _ in range(5):
            calls.append("|")
            window.step()
    assert calls == ["|", "|", "start", "push ProfilerStep#2", "|", "pop", "push ProfilerStep#3", "|", "pop",
                     "stop", "|"]


@pytest.mark.fast
def test_nsys_stats_csv_and_sqlite_are_read(tmp_path):
    stdout = ("Generating SQLite file rank0.sqlite\nProcessing [rank0.sqlite] with [cuda_gpu_kern_sum.py]...\n"
              '"Time (%)","Total Time (ns)","Instances","Avg (ns)","Med (ns)","Min (ns)","Max (ns)",'
              '"StdDev (ns)","Name"\n'
              '70.0,7000000,10,700000,700000,1,1,0,"ampere_sgemm_128x64_tn"\n'
              '30.0,3000000,2,1500000,1500000,1,1,0,"ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm *)"\n')
    csv_path = tmp_path / "rank0_cuda_gpu_kern_sum.csv"
    csv_path.write_text(nsys.extract_csv(stdout))
    top = nsys.top_kernels(csv_path, k=5, steps=2)
    assert [row["name"] for row in top] == ["ampere_sgemm_128x64_tn",
                                            "ncclDevKernel_AllReduce_Sum_f32_RING_LL(ncclDevComm *)"]
    assert top[0]["self_ms_total"] == pytest.approx(7.0) and top[0]["self_ms_per_step"] == pytest.approx(3.5)

    # run_stats against a stand-in nsys that knows only the older NVTX report name.
    fake = tmp_path / "nsys"
    fake.write_text('#!/bin/sh\n[ "$1" = stats ] || exit 3\ncase "$3" in nvtx_sum) exit 1;; esac\n'
                    'printf \'"Time (%%)","Total Time (ns)","Instances","Name"\\n50.0,100,2,"k"\\n\' > "$7_$3.csv"\n')
    fake.chmod(0o755)
    written = nsys.run_stats(str(fake), tmp_path / "rank0.nsys-rep", tmp_path / "stats")
    assert sorted(written) == sorted(nsys.STATS_REPORTS)
    assert written["nvtx_sum"] == tmp_path / "stats" / "rank0_nvtx_sum.csv"
    assert nsys.read_stats_csv(written["nvtx_sum"])[0]["Name"] == "k"
    assert sorted(p.name for p in (tmp_path / "stats").iterdir()) == sorted(
        f"rank0_{name}.csv" for name in nsys.STATS_REPORTS)

    # A minimal SQLite export (the tables and columns the reader uses), times in ns.
    db = tmp_path / "rank0.sqlite"
    con = sqlite3.connect(db)
    con.executescript("""
        CREATE TABLE StringIds (id INTEGER PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE NVTX_EVENTS (start INT, end INT, eventType INT, text TEXT, textId INT, globalTid INT);
        CREATE TABLE CUPTI_ACTIVITY_KIND_KERNEL (start INT, end INT, correlationId INT, demangledName INT,
                                                 shortName INT);
        CREATE TABLE CUPTI_ACTIVITY_KIND_RUNTIME (start INT, end INT, correlationId INT, globalTid INT);
        INSERT INTO StringIds VALUES (1, 'sgemm'), (2, 'ncclDevKernel_AllReduce');
    """)
    t = two_steps("cuda")
    nvtx_rows = [(int(s * 1e3), int(e * 1e3), 59, f"ProfilerStep#{i + 3}", None, 7) for i, (s, e) in enumerate(t.steps)]
    nvtx_rows += [(int(s * 1e3), int(e * 1e3), 59, name, None, 7) for name in RANGES for s, e in t.ranges[name]]
    con.executemany("INSERT INTO NVTX_EVENTS VALUES (?,?,?,?,?,?)", nvtx_rows)
    for i, (start, end, launch) in enumerate(t.compute):
        con.execute("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?,?,?,?,?)", (start * 1e3, end * 1e3, i, 1, 1))
        con.execute("INSERT INTO CUPTI_ACTIVITY_KIND_RUNTIME VALUES (?,?,?,?)", (launch * 1e3, launch * 1e3 + 1, i, 8))
    for j, (start, end) in enumerate(t.comm):
        con.execute("INSERT INTO CUPTI_ACTIVITY_KIND_KERNEL VALUES (?,?,?,?,?)",
                    (start * 1e3, end * 1e3, 100 + j, 2, 2))
    con.commit()
    con.close()
    from_db = split_step_time(nsys.timeline_from_sqlite(db, rank=0))
    expected = split_step_time(t)
    assert from_db["split_ms"] == pytest.approx(expected["split_ms"])
    assert from_db["communication"]["events"] == {"ncclDevKernel_AllReduce": 2}


# --- scaling ---------------------------------------------------------------------------------------
@pytest.mark.fast
def test_scaling_table_from_given_timings():
    rows = scaling_table([{"world_size": 2, "seconds": 7.5, "steps": 10},
                          {"world_size": 1, "seconds": 10.0, "steps": 10}])
    one, two = rows
    assert (one["world_size"], one["speedup"], one["efficiency"]) == (1, 1.0, 1.0)
    assert two["step_seconds"] == pytest.approx(0.75)
    assert two["speedup"] == pytest.approx(10 / 7.5) and two["efficiency"] == pytest.approx(10 / 15)
    assert two["time_vs_single"] == pytest.approx(0.75)  # the seed's gloo figure: 75% of single-process time
    reason = skip_reason(2, "cuda", gpus=1)
    assert "not measured" in reason and "not simulated" in reason and skip_reason(2, "cpu", gpus=0) is None
    skipped = scaling_table([{"world_size": 1, "seconds": 10.0, "steps": 10}, {"world_size": 2, "skipped": reason}])
    assert skipped[1]["speedup"] is None and skipped[1]["skipped"] == reason


# --- the Profile stage end to end ---------------------------------------------------------------------
def runs_dir(path):
    return luigi_config("bertflow", runs_dir=path)


def test_profile_stage_world_size_2_on_gloo(tmp_path, monkeypatch, tiny_encoder_dir):
    import luigi
    from luigi.execution_summary import LuigiStatusCode

    from pipeline.profile import Profile

    monkeypatch.setattr(run, "_POLL_SECONDS", 0.2)
    tiny = tiny_encoder_dir
    params = dict(task="squad", model_dir=str(tiny), world_size=2, warmup_steps=2, active_steps=3,
                  global_batch_size=8, device="cpu", synthetic_seq_length=32, cpu_threads_per_process=1,
                  prep_scaling_png=str(tmp_path / "missing.png"))
    with runs_dir(tmp_path / "runs"):
        task = Profile(**params)
        result = luigi.build([task], local_scheduler=True, detailed_summary=True)
        assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
        out = task.out_dir
        assert out.parent == tmp_path / "runs" and out.name.startswith("profile-squad-")
        summary = json.loads((out / "profile_summary.json").read_text())

        assert summary["backend"] == "torch" and summary["setup"]["dist_backend"] == "gloo"
        for rank in (0, 1):
            trace = json.loads((out / "traces" / f"rank{rank}.pt.trace.json").read_text())
            names = {event.get("name") for event in trace["traceEvents"]}
            assert set(RANGES) <= names
            assert sum(name.startswith("ProfilerStep#") for name in names if name) == 3
        for split in (summary["step"], *summary["per_rank"]):
            assert set(split["shares"]) == set(CATEGORIES)
            assert sum(split["shares"].values()) == pytest.approx(1.0, abs=0.02)
        for split in summary["per_rank"]:
            assert split["steps"] == 3 and split["communication"]["busy_ms"] > 0
            assert any("all_reduce" in name or "allreduce" in name for name in split["communication"]["events"])
        assert summary["top_ops"] and summary["top_ops"][0]["self_ms_total"] > 0

        scaling = summary["scaling"]
        assert [row["world_size"] for row in scaling["rows"]] == [1, 2]
        assert all(row["step_seconds"] > 0 and row["speedup"] > 0 for row in scaling["rows"])
        markdown = (out / "profile_summary.md").read_text()
        assert markdown.startswith("## Profile") and "### DDP scaling" in markdown and "missing.png" in markdown

        stamp = (out / "profile_summary.json").stat().st_mtime_ns
        again = luigi.build([Profile(**params)], local_scheduler=True, detailed_summary=True)
        assert again.status == LuigiStatusCode.SUCCESS
        assert (out / "profile_summary.json").stat().st_mtime_ns == stamp  # complete: nothing re-ran
        assert Profile(**{**params, "world_size": 1}).out_dir != out  # world size changes the profile
        assert Profile(**{**params, "cpu_threads_per_process": 2}).out_dir == out
