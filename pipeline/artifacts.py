"""Content-addressed artifact folders and scheduler progress for the Luigi tasks.

Luigi's ``complete()`` only checks that outputs exist, so every artifact's folder name carries a
short hash of what changes it: the task's significant parameters, a schema version, the names of
the upstream folders it is built from (themselves content-addressed) and the contents (sha256) of
its input files. Change any of them and the task's output path changes, so it (and everything
downstream) runs again; knobs that don't change results (nproc, logging) are
``significant=False`` and stay out of the hash.

:class:`Artifact` is where this happens, once: a task says what kind of folder it writes and what
goes into its name, and the base alone hashes that into ``<runs_dir>/<kind>-<hash>`` or, while an
input the name is made of does not exist yet, into a pending path.
"""

from __future__ import annotations

import hashlib
import json
import time
from functools import lru_cache
from pathlib import Path

import luigi

from prep.folders import MANIFEST


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


HASH_LENGTH = 12  # hex digits of the sha256 in a folder's name


def digest(payload: dict, length: int = HASH_LENGTH) -> str:
    """The hash of ``payload`` (JSON, keys sorted) that names a folder: its first ``length`` hex digits."""
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class Artifact(luigi.Task):
    """A task whose output is a content-addressed folder, ``<runs_dir>/<kind>-<hash>``.

    A subclass says what its folder is called before the hash (:meth:`folder_kind`), what goes
    into the hash (:meth:`name_payload`: significant parameters, upstream folder names, input
    content hashes, schema version), and which file it writes last (``done_file``: the folder is
    finished once that file exists).

    The pending rule: Luigi asks every task of the graph for its output before any runs, and an
    artifact named after a data file's content (or after an upstream folder named so) has no
    name until that file is there. Until then ``name_payload()`` is None and the output lies under
    ``<runs_dir>/pending/``, a path never created, so the task counts as incomplete; by the time
    it runs, its real path is known. The pending path hashes :meth:`pending_payload`, what is known
    before the inputs are (usually the name payload less what the inputs add).
    """

    hash_length = HASH_LENGTH
    done_file = MANIFEST

    def __init__(self, *args, **kwargs):
        from pipeline.console import note_command_line

        super().__init__(*args, **kwargs)
        note_command_line()
        self.check_parameters()

    def check_parameters(self) -> None:
        """Raise (``ValueError``, one line naming the parameter) on parameters that cannot work.

        Called when the task is made, so ``luigi`` refuses a bad command line before anything is
        scheduled or written. Checks that need an input file's contents wait for ``run()``.
        """

    def folder_kind(self) -> str:
        """The folder's name before its hash: ``features/gap-development``, ``eval/gap``, ``run``."""
        raise NotImplementedError

    def name_payload(self) -> dict | None:
        """What the folder's name hashes, or None while an input it is made of does not exist yet."""
        raise NotImplementedError

    def pending_payload(self) -> dict:
        """What tells this task's pending path from another's (default: its significant parameters)."""
        return significant_params(self)

    def runs_root(self) -> Path:
        return Path(bertflow().runs_dir)

    def named_dir(self) -> Path | None:
        """The artifact's folder, or None while it has no name yet (pending)."""
        payload = self.name_payload()
        if payload is None:
            return None
        return self.runs_root() / f"{self.folder_kind()}-{digest(payload, self.hash_length)}"

    def pending_dir(self) -> Path:
        # Never created, never published: the default hash length whatever the folder's own.
        return self.runs_root() / "pending" / f"{self.folder_kind().replace('/', '-')}-{digest(self.pending_payload())}"

    @property
    def out_dir(self) -> Path:
        return self.named_dir() or self.pending_dir()

    def ready_dir(self) -> Path:
        """The folder ``run()`` writes: by then every input it is named after must exist."""
        found = self.named_dir()
        if found is None:
            raise FileNotFoundError(f"{self.task_family}: an input its folder is named after is missing "
                                    f"(its path until then: {self.pending_dir()})")
        return found

    def output(self):
        return luigi.LocalTarget(str(self.out_dir / self.done_file))


def check_chain(tasks, seen: set | None = None) -> None:
    """Make every task upstream of ``tasks`` (their ``requires()``, recursively): each checks its
    parameters as it is made, so an entry task refuses a bad upstream knob before scheduling."""
    seen = set() if seen is None else seen
    for task in luigi.task.flatten(tasks):
        if task.task_id not in seen:
            seen.add(task.task_id)
            check_chain(task.requires(), seen)


def upstream_dir(task: luigi.Task) -> Path | None:
    """The folder an upstream task writes (its output's parent), or None while it has no name yet."""
    try:
        return task.named_dir() if isinstance(task, Artifact) else Path(task.output().path).parent
    except FileNotFoundError:  # a file it is named after (an encoder's tokenizer, a user's file) is not there
        return None


class FolderOutput(luigi.ExternalTask):
    """A finished artifact folder given by path (its marker file is written last)."""

    path = luigi.Parameter()
    marker = luigi.Parameter(default=MANIFEST, description="the file written last")

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
