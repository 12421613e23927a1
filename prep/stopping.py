"""Stopping cleanly: a run that is stopped takes the processes it started with it.

SIGTERM's default action ends a Python process on the spot: no ``finally`` runs, so a training
subprocess or a pool's workers outlive the run (seen: a trainer reparented to pid 1, still
writing into its run folder). Code that owns child processes runs them inside
:func:`stop_on_signals`, where SIGTERM and SIGHUP raise :class:`Stopped` in the main thread like
Ctrl-C raises KeyboardInterrupt, so the owner's clean-up (``pool.terminate()``,
:func:`stop_process_group`) runs before the process exits.

``Stopped`` is a KeyboardInterrupt on purpose: Luigi's worker re-raises KeyboardInterrupt (it
stops scheduling and exits) where it would mark any other exception FAILED and go on to run the
next task, and no ``except Exception`` swallows it.

What a SIGKILL (or the OOM killer) leaves is covered on Linux by the parent-death signal: a
child started by :func:`start_process_group`, a prep worker, and a Luigi worker process running
a task inside ``stop_on_signals`` are sent SIGTERM by the kernel when their parent dies.

Shared by ``prep.pool`` and ``train.launch`` (train builds on prep already).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# Checkpoints are written atomically, so a trainer needs no long grace to leave a usable folder;
# torchrun forwards SIGTERM to its ranks and they exit within a second or two.
GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived inside :func:`stop_on_signals`."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum = signum


def _raise_stopped(signum, frame):
    raise Stopped(signum)


@contextlib.contextmanager
def stop_on_signals(signums: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, ``signums`` raise :class:`Stopped` in the main thread instead of killing it.

    A signal whose handler someone else set (not the default action: ``nohup`` ignores SIGHUP, a
    launcher may install its own) is left alone. Off the main thread, where Python cannot set
    handlers, this does nothing. In a ``multiprocessing`` child (a Luigi worker process with
    ``--workers`` > 1) the block also asks for SIGTERM when the parent dies, so SIGTERM to the
    ``luigi`` command stops the task it was running. Usable as a decorator.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    for signum in signums:
        if signal.getsignal(signum) == signal.SIG_DFL:
            previous[signum] = signal.signal(signum, _raise_stopped)
    with_parent = multiprocessing.parent_process() is not None and set_parent_death_signal(signal.SIGTERM)
    try:
        yield
    finally:
        if with_parent:
            set_parent_death_signal(0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@contextlib.contextmanager
def signals_ignored(signums: tuple[int, ...] = (signal.SIGINT, *STOP_SIGNALS)) -> Iterator[None]:
    """Ignore ``signums`` while a bounded clean-up runs, so a second Ctrl-C cannot cut it short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in signums}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


@functools.lru_cache(maxsize=1)
def _prctl() -> Callable | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        return None


def set_parent_death_signal(signum: int, expected_parent: int | None = None) -> bool:
    """Linux: have the kernel send ``signum`` to this process when its parent dies (0 clears it).

    Returns False where that is not available. With ``expected_parent``, a parent that already
    died before the call (this process was reparented) sends the signal at once.
    """
    prctl = _prctl()
    if prctl is None or prctl(_PR_SET_PDEATHSIG, signum) != 0:
        return False
    if expected_parent is not None and signum and os.getppid() != expected_parent:
        os.kill(os.getpid(), signum)
    return True


def start_process_group(command: list[str], **popen_kwargs) -> subprocess.Popen:
    """``Popen(command)`` as the leader of a new session, so one ``killpg`` reaches all it starts.

    On Linux the child also gets SIGTERM if this process dies without stopping it (SIGKILL).
    """
    prctl = _prctl()  # resolved here: the child only makes the call, between fork and exec
    preexec = None if prctl is None else functools.partial(prctl, _PR_SET_PDEATHSIG, signal.SIGTERM)
    return subprocess.Popen(command, start_new_session=True, preexec_fn=preexec, **popen_kwargs)


def descendants(pid: int) -> list[int]:
    """Pids of every living descendant of ``pid`` (Linux ``/proc``; psutil elsewhere, if installed)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [entry for entry in os.listdir("/proc") if entry.isdigit()]
    except FileNotFoundError:
        try:
            import psutil
        except ImportError:
            return []
        try:
            return [p.pid for p in psutil.Process(pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            return []
    for entry in entries:
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # The command name in (...) may hold spaces; the parent pid is the 2nd field after it.
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, todo = [], list(children.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo += children.get(child, [])
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the process itself
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True


def _signal_groups(pids: list[int], signum: int) -> None:
    """Send ``signum`` to the process group of each pid (never to our own group: to the pid alone)."""
    own = os.getpgrp()
    for pid in pids:
        try:
            group = os.getpgid(pid)
            if group != own:
                os.killpg(group, signum)
            else:
                os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            continue


def _signal_group(leader: int, signum: int) -> None:
    try:
        os.killpg(leader, signum)
    except (ProcessLookupError, PermissionError):  # the whole group is gone already
        pass


def stop_process_group(process: subprocess.Popen, grace_s: float = GRACE_S) -> int:
    """Stop a child started by :func:`start_process_group` and everything under it; return its exit code.

    SIGTERM goes to the child's process group (torchrun forwards it to its ranks, which run in
    sessions of their own); whatever of the tree is alive ``grace_s`` later gets SIGKILL, each
    process's group included. The tree is listed first: once torchrun is gone its ranks can no
    longer be found through it.
    """
    with signals_ignored():
        tree = [process.pid, *descendants(process.pid)]
        _signal_group(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            process.poll()
            if not any(_alive(pid) for pid in tree):
                break
            time.sleep(0.05)
        else:
            survivors = [pid for pid in tree if _alive(pid)]
            survivors += [pid for pid in descendants(process.pid) if pid not in survivors]
            log.warning("pid(s) %s still running %.0fs after SIGTERM: sending SIGKILL", survivors, grace_s)
            _signal_group(process.pid, signal.SIGKILL)
            _signal_groups(survivors, signal.SIGKILL)
        return process.wait()
