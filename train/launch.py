"""Starting training: as a subprocess of a Luigi task, or by hand on one machine or several.

    # this machine, its 2 least busy GPUs (NVML), the global batch unchanged
    python -m train.launch --gpus 2 -- --task gap --features DIR --out runs/gap
    # several machines, a different number of processes on each: the same command on every host
    python -m train.launch --hosts hosts.json -- --task squad --features DIR --out /shared/runs/squad

``hosts.json`` maps each host to its process count, node 0 first (the seed write-up's map,
:mod:`train.hosts`). The launcher finds this host in it, checks the map and the training
arguments against the world size (errors before anything starts), has every host check in on
the first host's port + 1 (a host that never comes is named after ``--rdzv-timeout`` seconds
instead of a hang), picks this host's GPUs (:mod:`train.gpus`) and runs torchrun with
``--nnodes``, ``--node-rank``, ``--nproc-per-node`` and a c10d rendezvous on the first host's
``--port``. It stays torchrun's parent (rather than exec'ing it) so node 0 keeps the check-in
store up while the others read it, and so a stop signal reaches the whole tree.

For the Luigi task the parent never imports CUDA state: the GPU count comes from a short-lived
child process, so a Luigi worker that forks later has not touched CUDA. World size 1 runs
``python -m train``; more runs ``python -m torch.distributed.run --standalone --nproc-per-node N
-m train`` (one node).
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from prep.folders import RunFolder
from prep.stopping import GRACE_S, start_process_group, stop_on_signals, stop_process_group


@functools.lru_cache(maxsize=1)
def visible_cuda_devices() -> int:
    """GPUs torch can see, counted in a child process (0 without CUDA); probed once per value of
    ``CUDA_VISIBLE_DEVICES`` (the probe starts a Python with torch: seconds, asked by several stages)."""
    return _count_cuda_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))


@functools.lru_cache(maxsize=None)
def _count_cuda_devices(_visible: str | None) -> int:
    probe = "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


@functools.lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """Whether this machine's CPU runs bf16 matmuls natively (train.model.cpu_has_native_bf16, False when
    unknown), asked in a child process like :func:`visible_cuda_devices` (the parent stays torch-free)."""
    probe = "from train.model import cpu_has_native_bf16; print(cpu_has_native_bf16(unknown=False))"
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    return result.stdout.strip().splitlines()[-1] == "True"


def check_world_size(world_size: int, device: str = "auto") -> None:
    """Raise if ``world_size`` processes cannot each get a GPU on a CUDA machine."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if device == "cpu":
        return
    gpus = visible_cuda_devices()
    if device == "cuda" and gpus == 0:
        raise RuntimeError("device cuda requested but no GPU is visible")
    if gpus and world_size > gpus:
        raise RuntimeError(
            f"world_size {world_size} > {gpus} visible GPU(s) "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>')}); "
            "use at most one process per GPU, or device cpu"
        )


def launch_command(train_args: list[str], world_size: int, python: str = sys.executable) -> list[str]:
    """The argv that runs ``python -m train *train_args`` on ``world_size`` local processes."""
    if world_size == 1:
        return [python, "-m", "train", *train_args]
    return [
        python, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={world_size}",
        "-m", "train", *train_args,
    ]


def read_progress(out_dir: str | Path) -> dict | None:
    """The trainer's latest ``OUT/progress.json`` record, or None before the first (never raises)."""
    try:
        return json.loads(RunFolder(out_dir).progress.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def train_argv(**options) -> list[str]:
    """``--flag value`` arguments for ``python -m train`` from keyword options.

    ``None`` leaves a flag out, ``True`` gives a bare switch, ``False`` leaves a switch out;
    underscores become dashes (``global_batch_size=32`` -> ``--global-batch-size 32``).
    """
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        else:
            argv += [flag, str(value)]
    return argv


def _pidfd(process: subprocess.Popen) -> int | None:
    """A file descriptor that becomes readable when ``process`` exits (Linux >= 5.3), else None."""
    try:
        return os.pidfd_open(process.pid)
    except (AttributeError, OSError):
        return None


def _exited_within(process: subprocess.Popen, pidfd: int | None, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``process`` to exit; True once it has (and is reaped).

    Not ``Popen.wait(timeout)``: its busy loop takes the Popen's wait lock hundreds of times a
    second, and a signal handler that raises (Ctrl-C, :func:`prep.stopping.stop_on_signals`) right
    after an acquire leaves the lock taken, so the stop path's final ``wait()`` hangs for ever (seen
    in CI). Here the wait is a ``select`` on the pidfd (or short sleeps), holding no lock.
    """
    if process.poll() is not None:
        return True
    if pidfd is not None:
        select.select([pidfd], [], [], seconds)
    else:
        deadline = time.monotonic() + seconds
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    return process.poll() is not None


def run_logged(command: list[str], log_path: Path, what: str, env: dict | None = None,
               on_poll: Callable[[], None] | None = None, poll_seconds: float = 2.0,
               grace_s: float = GRACE_S) -> None:
    """Run ``command`` with its output appended to ``log_path``; raise with the log's tail on failure.

    ``on_poll`` is called every ``poll_seconds`` while it runs (progress reports); the call returns
    as soon as the command exits. An interrupt
    (Ctrl-C, SIGTERM, SIGHUP) or error here stops the child's whole process group (SIGTERM, then
    SIGKILL after ``grace_s``) before it propagates, so no run is left orphaned.
    """
    with open(log_path, "ab") as log, stop_on_signals():
        log.write(("$ " + " ".join(command) + "\n").encode())
        log.flush()
        process = None
        try:
            process = start_process_group(command, stdout=log, stderr=subprocess.STDOUT, env=env)
            pidfd = _pidfd(process)
            try:
                while not _exited_within(process, pidfd, poll_seconds):
                    if on_poll is not None:
                        on_poll()
            finally:
                if pidfd is not None:
                    os.close(pidfd)
        except BaseException:
            if process is not None:
                stop_process_group(process, grace_s)
            raise
    if process.returncode != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-25:]
        raise RuntimeError(f"{what} exited with {process.returncode}; {log_path} ends with:\n" + "\n".join(tail))


# --- python -m train.launch: one machine or several -----------------------------------------
DEFAULT_PORT = 29500


class LaunchError(ValueError):
    """A launch that cannot work: said before anything starts."""


@dataclass(frozen=True)
class LaunchPlan:
    command: list[str]
    env: dict  # variables set for the training processes (CUDA_VISIBLE_DEVICES...)
    notes: list[str]  # what was decided, printed before the start
    host_map: object = None  # train.hosts.HostMap with --hosts
    this_host: str | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train.launch", usage="python -m train.launch [options] -- <python -m train arguments>",
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", default=None, help="JSON map host -> processes, node 0 first (several machines)")
    parser.add_argument("--host", default=None,
                        help="this machine's entry in --hosts (default: the entry that names this machine)")
    parser.add_argument("--gpus", type=int, default=None,
                        help="processes here, each on one of the N GPUs with the least memory in use "
                             "(default: all GPUs, or 1 process on a CPU-only machine; with --hosts: its count)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help="rendezvous port on the first host; the hosts check in on PORT + 1")
    parser.add_argument("--rdzv-timeout", type=float, default=600.0,
                        help="seconds to wait for every host before naming the missing ones")
    parser.add_argument("--job-id", default=None, help="rendezvous id (default: from the map and the port)")
    parser.add_argument("--dry-run", action="store_true", help="print the command and exit")
    return parser


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """(launcher arguments, training arguments): the training arguments come after ``--``."""
    if "--" not in argv:
        raise LaunchError("put the training arguments after --, e.g. "
                          "python -m train.launch --hosts hosts.json -- --task gap --features DIR --out DIR")
    cut = argv.index("--")
    if not argv[cut + 1:]:
        raise LaunchError("no training arguments after --")
    return argv[:cut], argv[cut + 1:]


def check_train_args(train_args: list[str], world_size: int, what: str):
    """Parse the training arguments as ``python -m train`` will and check them at ``world_size``."""
    from tasks import get_task
    from train.__main__ import build_parser as train_parser, config_values
    from train.config import TrainConfig

    try:
        args = train_parser(train_args).parse_args(train_args)  # a bad flag exits here, as python -m train would
        config = TrainConfig(**config_values(args), world_size=world_size)
        return config.for_task(get_task(config.task).train)
    except (ValueError, FileNotFoundError) as err:  # a bad --config file, a setting TrainConfig refuses
        raise LaunchError(f"{what}: {err}") from None


def _choose_gpus(nproc: int, device: str, explicit: bool, env: dict, nvml) -> str:
    from train.gpus import GpuChoiceError, NvmlUnavailable, select_gpus

    try:
        return select_gpus(nproc, env, nvml)
    except GpuChoiceError as err:
        if isinstance(err, NvmlUnavailable) and not explicit and device == "auto":
            return f"no NVIDIA GPU here ({err}); {nproc} process(es) on CPU (gloo)"
        raise LaunchError(str(err)) from None


def plan_launch(options: argparse.Namespace, train_args: list[str], environ: dict | None = None,
                nvml=None, python: str = sys.executable) -> LaunchPlan:
    """What to run on this host, checked: raises :class:`LaunchError` / ``HostMapError`` on a wrong launch."""
    from train.hosts import find_this_host, read_host_map

    environ = dict(os.environ if environ is None else environ)
    env: dict = {}
    notes: list[str] = []
    if options.gpus is not None and options.gpus < 1:
        raise LaunchError(f"--gpus must be >= 1, got {options.gpus}")
    if options.hosts is None:
        if options.host is not None:
            raise LaunchError("--host names an entry of --hosts; give --hosts too")
        nproc = options.gpus if options.gpus is not None else None
        host_map = this_host = None
    else:
        host_map = read_host_map(options.hosts)
        this_host = find_this_host(host_map, options.host)
        nproc = host_map.processes[this_host]
        if options.gpus is not None and options.gpus != nproc:
            raise LaunchError(f"--gpus {options.gpus}, but {host_map.source} gives {this_host} {nproc} processes")
    probe = check_train_args(train_args, 1, "the training arguments")
    if probe.device != "cpu":
        if nproc is None:  # one machine, no count given: every GPU (NVML's count), else one CPU process
            from train.gpus import NvmlUnavailable, list_gpus

            try:
                nproc = max(1, len(list_gpus(nvml)))
            except NvmlUnavailable:
                nproc = 1
        chosen = dict(environ)  # select_gpus keeps a CUDA_VISIBLE_DEVICES the user set
        notes.append(_choose_gpus(nproc, probe.device, options.gpus is not None, chosen, nvml))
        env.update({name: value for name, value in chosen.items() if environ.get(name) != value})
    elif options.gpus is not None:
        notes.append(f"--device cpu: --gpus {options.gpus} runs {options.gpus} CPU process(es) (gloo); "
                     "no GPU is used")
    nproc = nproc or 1
    if host_map is None:
        check_train_args(train_args, nproc, f"{nproc} process(es)")
        return LaunchPlan(launch_command(train_args, nproc, python), env, notes)
    check_train_args(train_args, host_map.world_size,
                     f"{host_map.source} gives {host_map.world_size} processes in all ({host_map.describe()})")
    node_rank = host_map.node_rank(this_host)
    job_id = options.job_id or "bertflow-" + hashlib.sha256(
        json.dumps([host_map.processes, options.port]).encode()).hexdigest()[:12]
    timeout = max(1, int(round(options.rdzv_timeout)))
    command = [
        python, "-m", "torch.distributed.run", f"--nnodes={len(host_map.hosts)}", f"--node-rank={node_rank}",
        f"--nproc-per-node={nproc}", "--rdzv-backend=c10d",
        f"--rdzv-endpoint={host_map.rendezvous_host}:{options.port}", f"--rdzv-id={job_id}",
        f"--rdzv-conf=join_timeout={timeout},is_host={'true' if node_rank == 0 else 'false'}",
        f"--local-addr={this_host}", "--max-restarts=0", "-m", "train", *train_args,
    ]
    notes.insert(0, f"{this_host}: node {node_rank} of {len(host_map.hosts)}, {nproc} of {host_map.world_size} "
                    f"processes ({host_map.describe()}); rendezvous {host_map.rendezvous_host}:{options.port}")
    return LaunchPlan(command, env, notes, host_map, this_host)


def main(argv: list[str] | None = None, nvml=None) -> int:
    from train.hosts import HostMapError, RendezvousTimeout, check_in

    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    if "--" not in argv and ("-h" in argv or "--help" in argv):
        parser.print_help()
        return 0
    try:
        own, train_args = split_argv(argv)
    except LaunchError as err:
        parser.error(str(err))
    options = parser.parse_args(own)
    store = None
    try:
        plan = plan_launch(options, train_args, nvml=nvml)
        for note in plan.notes:
            print(f"train.launch: {note}", file=sys.stderr, flush=True)
        if options.dry_run:
            print(" ".join(plan.command))
            return 0
        if plan.host_map is not None:
            # Node 0 serves the check-in until torchrun returns: the others may still be reading it.
            store = check_in(plan.host_map, plan.this_host, options.port + 1, options.rdzv_timeout)
            print(f"train.launch: all {len(plan.host_map.hosts)} hosts checked in; starting torchrun",
                  file=sys.stderr, flush=True)
    except (LaunchError, HostMapError) as err:
        print(f"python -m train.launch: error: {err}", file=sys.stderr)
        return 2
    except RendezvousTimeout as err:
        print(f"python -m train.launch: error: {err}", file=sys.stderr)
        return 3
    except KeyboardInterrupt:
        print("python -m train.launch: stopped before the start", file=sys.stderr)
        return 130
    try:
        return run_child(plan.command, {**os.environ, **plan.env})
    except KeyboardInterrupt as stop:  # Ctrl-C, or SIGTERM / SIGHUP (prep.stopping.Stopped): the tree is stopped
        print(f"python -m train.launch: {stop or 'interrupted'}; training stopped", file=sys.stderr)
        return 130
    finally:
        del store


def run_child(command: list[str], env: dict) -> int:
    """Run ``command`` in its own process group and return its exit code; a stop signal stops the tree."""
    with stop_on_signals():
        process = start_process_group(command, env=env)
        try:
            return process.wait()
        except BaseException:
            stop_process_group(process)
            raise


if __name__ == "__main__":
    sys.exit(main())
