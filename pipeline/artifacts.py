"""Content-addressed artifact paths and scheduler progress for the Luigi tasks.

Luigi's ``complete()`` only checks that outputs exist, so every artifact's folder name carries a
short hash of what changes it: the task's significant parameters, a schema version, and the
contents (sha256) of its input files. Change any of them and the task's output path changes,
so it (and everything downstream) runs again; knobs that don't change results (nproc, logging)
are ``significant=False`` and stay out of the hash.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path

import luigi


class bertflow(luigi.Config):  # noqa: N801 - the section name in luigi.cfg
    runs_dir = luigi.Parameter(default="runs", description="where every artifact is written")


@lru_cache(maxsize=256)
def _file_digest(path: str, size: int, mtime_ns: int, algorithm: str) -> str:
    from prep.artifact import file_digest

    return file_digest(path, algorithm)


def content_hash(path: str | Path, algorithm: str = "sha256") -> str:
    """A file's digest, memoised on (path, size, mtime) so complete() stays cheap."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    stat = path.stat()
    return _file_digest(str(path.resolve()), stat.st_size, stat.st_mtime_ns, algorithm)


def significant_params(task: luigi.Task) -> dict:
    params = dict(task.get_params())
    return {name: value for name, value in task.param_kwargs.items() if params[name].significant}


def digest(payload: dict, length: int = 12) -> str:
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def artifact_dir(kind: str, payload: dict) -> Path:
    """``<runs_dir>/<kind>-<hash of payload>``."""
    return Path(bertflow().runs_dir) / f"{kind}-{digest(payload)}"


def pending_dir(kind: str, payload: dict) -> Path:
    """Where an artifact would go while an input it is named after does not exist yet.

    Luigi asks every task of the graph for its output before any runs; an artifact named after
    a data file's content has no name until that file is there. This path is never created, so
    the task counts as incomplete; by the time it runs, its real path is known.
    """
    return Path(bertflow().runs_dir) / "pending" / f"{kind}-{digest(payload)}"


def upstream_dir(task: luigi.Task) -> Path | None:
    """The folder an upstream artifact task writes (its output's parent), or None while unknown."""
    try:
        return Path(task.output().path).parent
    except FileNotFoundError:  # an input file it is named after is not there yet
        return None


class FolderOutput(luigi.ExternalTask):
    """A finished artifact folder given by path (its marker file is written last)."""

    path = luigi.Parameter()
    marker = luigi.Parameter(default="manifest.json", description="the file written last")

    def output(self):
        return luigi.LocalTarget(str(Path(self.path) / self.marker))


class SchedulerProgress:
    """A ``progress(done, total, ...)`` callback that reports to Luigi's scheduler, throttled."""

    def __init__(self, task: luigi.Task, what: str, every_s: float = 2.0):
        self.task, self.what, self.every_s, self._last = task, what, every_s, 0.0

    def __call__(self, done: int, total: int, items: int | None = None) -> None:
        now = time.monotonic()
        if done < total and now - self._last < self.every_s:
            return
        self._last = now
        self.task.set_progress_percentage(round(100.0 * done / max(total, 1), 1))
        extra = f", {items} features" if items is not None else ""
        self.task.set_status_message(f"{self.what}: {done}/{total} chunks{extra}")
