"""One writer per artifact: an advisory lock file beside the artifact's folder.

Two runs that reach the same content-addressed artifact at once (two ``luigi`` commands on one
runs folder, or two Luigi workers) would otherwise both write it: twice the work, a fine-tune
with two trainers in one folder, a feature folder replaced under a reader. A writer holds
``flock`` on ``.<name>.lock`` next to the folder while it writes. A second writer waits for it
(saying who holds it) and then usually finds the artifact finished, so it has nothing to do; with
``timeout_s`` it fails instead, naming the holder.

The kernel drops a ``flock`` when its holder dies, however it dies, so a killed run never leaves
a stale lock. The holder deletes the file before letting go; a waiter that then gets the lock
on the deleted file notices (the path no longer names its file) and takes the lock again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

log = logging.getLogger(__name__)

_POLL_S = 0.2
_REMIND_S = 60.0
_HELD: dict[tuple[int, int, str], int] = {}  # (pid, thread, lock path) -> depth, for re-entry


class ArtifactLocked(RuntimeError):
    """Another run held an artifact's lock for longer than the caller would wait."""


@dataclass(frozen=True)
class HeldLock:
    path: Path
    holder_before: dict | None  # who held it when we asked (None: nobody, we did not wait)
    waited_s: float

    @property
    def waited(self) -> bool:
        return self.holder_before is not None


def lock_path(artifact_dir: str | Path) -> Path:
    """The lock file of ``artifact_dir``: ``.<name>.lock`` in the same parent folder."""
    artifact_dir = Path(artifact_dir)
    return artifact_dir.parent / f".{artifact_dir.name}.lock"


def describe_holder(holder: dict | None) -> str:
    if not holder:
        return "another run (no details)"
    return (f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('what') or 'writing'} "
            f"since {holder.get('since')})")


def _read_holder(fd: int) -> dict | None:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "null")
    except (OSError, ValueError):  # being written this instant
        return None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


def _refuse_to_wait_for_my_parent(artifact_dir: str | Path, holder: dict) -> None:
    """A spawned worker re-imports its parent's main module; a script that starts prep at its top
    level (no ``if __name__ == "__main__":``) thus starts the same prep again in the worker, which would
    wait for ever on the lock its parent holds while the parent waits for it."""
    if holder.get("pid") != os.getppid() or holder.get("host") != socket.gethostname():
        return
    # A process spawned by multiprocessing (or multiprocess) has its module loaded and, while it
    # imports the parent's main module, its current process marked _inheriting.
    spawned = [sys.modules.get(name) for name in ("multiprocessing.process", "multiprocess.process")]
    if any(getattr(module.current_process(), "_inheriting", False) for module in spawned if module is not None):
        raise ArtifactLocked(
            f"{artifact_dir} is being written by this worker's parent (pid {os.getppid()}), and this worker, "
            "while importing the parent's main module, started writing it again: the main program runs prep "
            "at its top level. Put that code under `if __name__ == \"__main__\":`.")


@contextlib.contextmanager
def artifact_lock(artifact_dir: str | Path, what: str = "", timeout_s: float | None = None) -> Iterator[HeldLock]:
    """Hold the exclusive lock of ``artifact_dir`` for the block; wait while another run holds it.

    ``what`` says what the holder does (shown to a waiting run). ``timeout_s=None`` waits as long as
    it takes (logging who holds it every minute); a number raises :class:`ArtifactLocked` after
    that long (0: at once). Re-entrant within one thread. The yielded :class:`HeldLock` says
    whether another run held it first: then the caller should check whether that run already
    made the artifact.
    """
    path = lock_path(artifact_dir)
    key = (os.getpid(), threading.get_ident(), str(path.resolve()))
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield HeldLock(path, None, 0.0)
        finally:
            _HELD[key] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    holder = None
    reminded = started
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            current = _read_holder(fd)
            os.close(fd)
            now = time.monotonic()
            if holder is None:
                holder = current or {}
                _refuse_to_wait_for_my_parent(artifact_dir, holder)
                log.warning("%s is being written by %s; waiting for it (lock %s)", artifact_dir,
                            describe_holder(holder), path)
            elif now - reminded >= _REMIND_S:
                reminded = now
                log.warning("still waiting %.0fs for %s: %s", now - started, artifact_dir, describe_holder(current))
            if timeout_s is not None and now - started >= timeout_s:
                raise ArtifactLocked(
                    f"{artifact_dir} is being written by {describe_holder(current or holder)}; gave up after "
                    f"{now - started:.0f}s (lock file {path}). Wait for that run, or stop it."
                ) from None
            time.sleep(_POLL_S)
            continue
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):
            break
        os.close(fd)  # we locked a file its last holder had already deleted: lock the new one
    try:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "what": what,
              "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode(), 0)
        _HELD[key] = 1
        waited_s = time.monotonic() - started
        if holder is not None:
            log.warning("%s: the other run let go after %.0fs", artifact_dir, waited_s)
        yield HeldLock(path, holder, waited_s)
    finally:
        _HELD.pop(key, None)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # while still holding it: see the module docstring
        os.close(fd)
