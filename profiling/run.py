"""``run_profile``: one profiled training run (+ the scaling runs) -> ``profile_summary.json``.

Everything heavy runs in fresh subprocesses (``python -m profiling.worker`` under torchrun and,
on the nsys path, under ``nsys profile``); this process never imports CUDA, so a Luigi worker
that forks later is safe. The artifact folder is assembled in a temp folder beside it and renamed into
place at the end, so a folder with ``profile_summary.json`` is always complete.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from prep.folders import RunFolder
from profiling import nsys as nsys_path
from profiling import scaling as scaling_mod
from profiling import summary as summary_mod
from profiling import torch_trace
from profiling.config import ProfileConfig
from profiling.timeline import mean_over_ranks, split_step_time

Progress = Callable[[str, float], None]
_POLL_SECONDS = 2.0


def choose_backend(requested: str, nsys: str | None, cuda_devices: int) -> tuple[str, str]:
    """(backend, why): nsys only where both nsys and a CUDA device exist."""
    if requested == "torch":
        return "torch", "torch.profiler requested"
    if nsys and cuda_devices:
        return "nsys", f"nsys found at {nsys} and {cuda_devices} CUDA device(s)"
    missing = [what for what, absent in (("nsys", not nsys), ("CUDA device", not cuda_devices)) if absent]
    if requested == "nsys":
        raise ValueError(f"backend nsys needs nsys (on PATH or in {nsys_path.NSYS_SEARCH_GLOBS[0]}) and a CUDA "
                         f"device; missing: {', '.join(missing)}")
    return "torch", "torch.profiler: no " + " and no ".join(missing)


def worker_command(worker_args: list[str], world_size: int, python: str = sys.executable) -> list[str]:
    """``python -m profiling.worker`` on ``world_size`` local processes (torchrun for more than one)."""
    if world_size == 1:
        return [python, "-m", "profiling.worker", *worker_args]
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
            "-m", "profiling.worker", *worker_args]


def train_args(config: ProfileConfig, features: Path, out: Path, world_size: int, profiled: bool) -> list[str]:
    """``python -m train`` arguments for one timed run of ``config.total_steps()`` steps."""
    from train.launch import train_argv

    steps = config.total_steps()
    per_device = config.per_device_batch_size
    if per_device is not None and world_size != config.world_size:
        per_device = None  # scaling runs let the trainer split the same global batch
    return train_argv(
        task=config.task, features=features, out=out, model=config.model_dir, head=config.head,
        precision=config.precision, global_batch_size=config.global_batch_size, per_device_batch_size=per_device,
        epochs=steps, max_steps=steps, seed=config.seed, device=config.device,
        log_every_n_steps=steps, save_every_n_steps=0, nvtx=profiled, no_progress_bar=True,
    )


def write_synthetic_features(out_dir: Path, config: ProfileConfig, spec) -> Path:
    """Exactly ``total_steps`` global batches of the task's synthetic rows (``spec``: its TrainSpec)."""
    from train.testing import write_feature_dir

    rows = config.global_batch_size * config.total_steps()
    longest = config.synthetic_seq_length
    table = spec.synthetic_features(rows, seed=config.seed, min_len=max(16, longest // 2), max_len=longest)
    return write_feature_dir(out_dir, table, config.task, "train", longest, input_info=spec.synthetic_data_info())


def child_env(config: ProfileConfig, world_size: int, device_type: str, cpus: int) -> tuple[dict, int | None]:
    """The subprocess environment; on CPU, OMP threads per process so every run uses the same cores."""
    env = {**os.environ}
    repo = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    threads = None
    if device_type == "cpu":
        threads = config.cpu_threads_per_process or max(1, cpus // world_size)
        env["OMP_NUM_THREADS"] = str(threads)
    return env, threads


def run_logged(command: list[str], log_path: Path, env: dict, what: str) -> None:
    from train.launch import run_logged as run_logged_in

    run_logged_in(command, log_path, what, env=env, poll_seconds=_POLL_SECONDS)


def _tidy(train_out: Path) -> None:
    """Delete a timed run's weights and checkpoints: a profile run's weights are throwaway."""
    run = RunFolder(train_out)
    for path in (run.checkpoints, run.model, run.head):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.is_file():
            path.unlink()


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def run_profile(config: ProfileConfig, spec, out_dir: str | Path, progress: Progress | None = None,
                python: str = sys.executable) -> dict:
    """Profile ``config.active_steps`` steady-state training steps and write the artifact folder.

    ``spec`` is the task's :class:`tasks.spec.TrainSpec` (its synthetic rows when no features are given).

    ``out_dir`` gets ``profile_summary.json`` (written last), ``profile_summary.md``, per-rank
    traces (``traces/rank<R>.pt.trace.json``) or Nsight reports (``rank<R>.nsys-rep`` +
    ``stats/*.csv``), ``profile.log`` and the scaling runs' metrics. Returns the summary.
    """
    from prep.artifact import atomic_output_dir, write_json_atomic
    from prep.pool import available_cpus
    from train.dist import backend_for
    from train.launch import check_world_size, visible_cuda_devices

    say = progress or (lambda message, percent: None)
    out_dir = Path(out_dir).resolve()
    check_world_size(config.world_size, config.device)
    gpus = 0 if config.device == "cpu" else visible_cuda_devices()
    device_type = "cuda" if gpus else "cpu"
    cpus = available_cpus()
    with atomic_output_dir(out_dir, marker=summary_mod.SUMMARY_JSON) as work:
        features, features_label = _features(config, spec, work, say)
        env, threads = child_env(config, config.world_size, device_type, cpus)
        recorded = _record(config, work, features, gpus, env, python, say)
        train_config = _read_json(RunFolder(work / "train").train_config)
        _tidy(work / "train")
        scaling = _measure_scaling(config, work, features, device_type, gpus, cpus, python, say) if config.scaling else None
        say("writing the summary", 95)
        summary = {
            "schema_version": summary_mod.SCHEMA_VERSION,
            "artifact_dir": str(out_dir),
            **recorded["backend"],
            "setup": {
                "task": config.task, "device": device_type, "world_size": config.world_size,
                "dist_backend": backend_for(device_type) if config.world_size > 1 else None,
                "precision": train_config["precision"], "global_batch_size": config.global_batch_size,
                "micro_batch_size": train_config["micro_batch_size"],
                "accumulation_steps": train_config["accumulation_steps"], "model_dir": config.model_dir,
                "features": features_label, "warmup_steps": config.warmup_steps, "active_steps": config.active_steps,
                "cpus": cpus, "threads_per_process": threads, "gpus": gpus,
            },
            "step": mean_over_ranks(recorded["per_rank"]),
            "per_rank": recorded["per_rank"],
            "top_ops": recorded["top"],
            "scaling": scaling,
            "prep_scaling": summary_mod.read_prep_scaling(config.prep_scaling_png),
            "artifacts": recorded["artifacts"],
            "open_with": _open_hints(recorded["backend"]["backend"]),
            "notes": recorded["notes"],
            "config": config.to_dict(),
        }
        (work / summary_mod.SUMMARY_MD).write_text(summary_mod.render_markdown(summary, out_dir), encoding="utf-8")
        write_json_atomic(work / summary_mod.SUMMARY_JSON, summary)
    say("done", 100)
    return summary


def _features(config: ProfileConfig, spec, work: Path, say: Progress) -> tuple[Path, str]:
    """(features folder, how the summary names it): the given folder, or synthetic rows written here."""
    if config.features_dir:
        return Path(config.features_dir).resolve(), f"`{config.features_dir}`"
    say("writing synthetic features", 2)
    features = write_synthetic_features(work / "features", config, spec)
    return features, (f"synthetic ({config.global_batch_size * config.total_steps()} rows, "
                      f"{max(16, config.synthetic_seq_length // 2)}-{config.synthetic_seq_length} tokens)")


def _record(config: ProfileConfig, work: Path, features: Path, gpus: int, env: dict, python: str,
            say: Progress) -> dict:
    """The profiled run under nsys (where it exists with CUDA) or torch.profiler; its per-rank step split."""
    nsys = nsys_path.find_nsys()
    backend, reason = choose_backend(config.backend, nsys, gpus)
    notes: list[str] = []
    nsys_error = None
    if backend == "nsys":
        say(f"profiling {config.total_steps()} steps under nsys", 5)
        try:
            timelines, top, artifacts = _profile_nsys(config, work, features, nsys, env, python)
        except Exception as err:  # noqa: BLE001 - any failure of the nsys path (a failed export, an odd
            # report) falls back under auto: an nsys that cannot make a report exists on some GPU machines
            if config.backend == "nsys":
                raise
            nsys_error = f"{type(err).__name__}: {err}"
            notes.append(f"nsys could not produce a report here, so torch.profiler was used: {nsys_error[-400:]}")
            backend, reason = "torch", "torch.profiler: the nsys run failed"
    if backend == "torch":
        say(f"profiling {config.total_steps()} steps under torch.profiler", 5)
        timelines, top, artifacts = _profile_torch(config, work, features, env, python)
    return {
        "backend": {"backend": backend, "backend_reason": reason,
                    "backend_label": ("Nsight Systems (nsys) capture of the window" if backend == "nsys"
                                      else "torch.profiler over the window"),
                    "nsys": {"path": nsys, "error": nsys_error}},
        "per_rank": [split_step_time(timeline) for timeline in timelines],
        "top": top, "artifacts": artifacts, "notes": notes,
    }


def _profile_torch(config, work: Path, features: Path, env: dict, python: str):
    trace_dir = work / "traces"
    args = ["--backend", "torch", "--trace-dir", str(trace_dir), "--warmup-steps", str(config.warmup_steps),
            "--active-steps", str(config.active_steps), "--",
            *train_args(config, features, work / "train", config.world_size, profiled=True)]
    run_logged(worker_command(args, config.world_size, python), work / "profile.log", env, "the profiled run")
    timelines = []
    for rank in range(config.world_size):
        path = torch_trace.trace_path(trace_dir, rank)
        if not path.is_file():
            raise RuntimeError(f"rank {rank} wrote no trace at {path}; see {work / 'profile.log'}")
        timelines.append(torch_trace.timeline_from_trace(torch_trace.load_trace(path), rank, source=str(path)))
    top = torch_trace.top_ops(torch_trace.ops_path(trace_dir, 0), config.top_k)
    artifacts = {
        "traces": [str(torch_trace.trace_path(trace_dir, r).relative_to(work)) for r in range(config.world_size)],
        "operator tables": [str(torch_trace.ops_path(trace_dir, r).relative_to(work))
                            for r in range(config.world_size)],
    }
    return timelines, top, artifacts


def _profile_nsys(config, work: Path, features: Path, nsys: str, env: dict, python: str):
    for stale in work.glob("rank*.nsys-rep"):
        stale.unlink()
    worker = [python, "-m", "profiling.worker", "--backend", "cuda-range", "--trace-dir", str(work / "traces"),
              "--warmup-steps", str(config.warmup_steps), "--active-steps", str(config.active_steps), "--",
              *train_args(config, features, work / "train", config.world_size, profiled=True)]
    command = nsys_path.build_nsys_command(nsys, work, worker, config.world_size, python)
    run_env = {**env, "RANK": "0"} if config.world_size == 1 else env
    run_logged(command, work / "profile.log", run_env, "the profiled run under nsys")
    timelines, reports, csvs, top = [], [], [], []
    for rank in range(config.world_size):
        report = work / f"rank{rank}.nsys-rep"
        if not report.is_file():
            raise FileNotFoundError(f"nsys wrote no report at {report}; see {work / 'profile.log'}")
        written = nsys_path.run_stats(nsys, report, work / "stats")
        sqlite = report.with_suffix(".sqlite")
        if not sqlite.is_file():
            subprocess.run([nsys, "export", "--type", "sqlite", "--output", str(sqlite), str(report)],
                           capture_output=True, check=True)
        timeline = nsys_path.timeline_from_sqlite(sqlite, rank)
        timelines.append(timeline)
        reports.append(str(report.relative_to(work)))
        csvs += [str(path.relative_to(work)) for path in written.values()]
        if rank == 0 and "cuda_gpu_kern_sum" in written:
            top = nsys_path.top_kernels(written["cuda_gpu_kern_sum"], config.top_k, len(timeline.steps))
    return timelines, top, {"nsys reports": reports, "nsys stats CSV": csvs}


def _measure_scaling(config, work: Path, features: Path, device_type: str, gpus: int, cpus: int, python: str,
                     say: Progress) -> dict:
    from train.dist import backend_for
    from train.launch import launch_command

    timings, notes = [], []
    sizes = config.scaling_world_sizes()
    (work / "scaling").mkdir(exist_ok=True)
    for i, world_size in enumerate(sizes):
        skipped = scaling_mod.skip_reason(world_size, device_type, gpus)
        if skipped:
            timings.append({"world_size": world_size, "skipped": skipped})
            notes.append(skipped)
            continue
        say(f"scaling: timing {config.total_steps()} steps at world size {world_size}", 50 + 20 * i)
        out = work / "scaling" / f"ws{world_size}"
        env, threads = child_env(config, world_size, device_type, cpus)
        command = launch_command(train_args(config, features, out, world_size, profiled=False), world_size, python)
        run_logged(command, work / "scaling" / "scaling.log", env, f"the world-size-{world_size} timing run")
        timings.append(scaling_mod.timing_from_metrics(_read_json(RunFolder(out).metrics), world_size,
                                                       threads_per_process=threads))
        _tidy(out)
    if device_type == "cpu":
        notes.append(f"CPU: {cpus} core(s) shared by all processes of a run "
                     f"(OMP threads per process shown); gloo all-reduce runs on the same cores.")
    precision = next((t["precision"] for t in timings if t.get("precision")), config.precision)
    return {"device": device_type, "dist_backend": backend_for(device_type),
            "precision": precision, "steps": config.total_steps(), "rows": scaling_mod.scaling_table(timings),
            "notes": notes}


def _open_hints(backend: str) -> list[str]:
    if backend == "nsys":
        return ["open `rank<R>.nsys-rep` in the Nsight Systems UI (`nsys-ui`); `stats/` holds `nsys stats` CSVs"]
    return ["open `traces/rank<R>.pt.trace.json` in https://ui.perfetto.dev (drag the file in) or chrome://tracing; "
            "the TensorBoard profiler plugin is deprecated, use Perfetto"]
