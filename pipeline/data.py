"""Data acquisition: the official SQuAD and GAP files, checksum-verified, or the user's own copies.

    luigi --module pipeline DataFile --name squad-dev-v1.1 --local-scheduler

Where ``[inputs]`` in luigi.cfg gives a path for a file, that file is used as it is (your own
copy; it is hashed into every artifact built from it). Otherwise the file is looked for in
``[inputs] data_dir``; if it is there its checksum must match the official one, and if it is not
it is downloaded from the official URL (to a ``.part`` file, verified, then renamed). A wrong
checksum is an error, and so is having neither network nor a local copy: the message says where
to put the file.

The files, URLs and checksums come from the tasks (``data_files`` in ``tasks/<name>/``).
"""

from __future__ import annotations

import os
import shutil
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import luigi

from pipeline.console import say
from pipeline.artifacts import content_hash  # memoised, so repeated complete() checks stay cheap
from prep.artifact import file_digest
from tasks import all_tasks
from tasks.spec import OfficialFile

def official_files() -> dict[str, OfficialFile]:
    """Every registered task's official data files, by name (``squad-dev-v1.1``, ``gap-test``, ...)."""
    files: dict[str, OfficialFile] = {}
    for spec in all_tasks():
        files.update(spec.data_files)
    return files


OFFICIAL = official_files()


class inputs:  # noqa: N801 - the [inputs] section of luigi.cfg
    """``data_dir`` (where official files are looked for and downloaded) and ``download_timeout_s``;
    any official file's name with ``_`` for ``-`` and ``.`` (``squad_train_v1_1 =
    /datasets/train-v1.1.json``) points at your own copy. Read straight from the config rather
    than as a ``luigi.Config``, whose fixed parameters could not list every task's files."""

    @property
    def data_dir(self) -> str:
        return luigi.configuration.get_config().get("inputs", "data_dir", "data")

    @property
    def download_timeout_s(self) -> float:
        return float(luigi.configuration.get_config().get("inputs", "download_timeout_s", 60.0))


class ChecksumError(ValueError):
    pass


def verify(path: Path, checksum: str) -> None:
    algorithm, expected = checksum.split(":", 1)
    actual = file_digest(path, algorithm)
    if actual != expected:
        raise ChecksumError(f"{path}: {algorithm} {actual} != official {expected}; "
                            "remove the file to download it again, or point [inputs] at your own copy")


def download(spec: OfficialFile, dest: Path, timeout_s: float, progress=None) -> None:
    """Fetch ``spec.url`` into ``dest`` through a ``.part`` file, verified before the rename.

    ``progress(bytes_done, bytes_total_or_None)`` is called after every MiB.
    """
    if not spec.downloadable:
        raise RuntimeError(f"{dest.name} has no direct download (its source: {spec.url}); put the file at {dest}"
                           + (f", or set [inputs] {spec.folder_key} to a folder holding {spec.member}"
                              if spec.folder_key else "") + " (offline here: LUIGI_CONFIG_PATH=luigi.offline.cfg)")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + f".part-{os.getpid()}")
    fetched = part.with_name(part.name + ".archive") if spec.member else part
    try:
        with urllib.request.urlopen(spec.url, timeout=timeout_s) as response, open(fetched, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
        if spec.member:  # the file is one member of the archive: extract it, then verify it
            extract_member(fetched, spec.member, part)
    except (urllib.error.URLError, OSError, KeyError, zipfile.BadZipFile) as err:
        part.unlink(missing_ok=True)
        raise RuntimeError(
            f"could not download {spec.url} ({err}); with no network, put the file at {dest} "
            f"or set its path in luigi.cfg's [inputs] section (offline here: LUIGI_CONFIG_PATH=luigi.offline.cfg)"
        ) from err
    finally:
        if fetched != part:
            fetched.unlink(missing_ok=True)
    try:
        verify(part, spec.checksum)
    except ChecksumError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)


def extract_member(archive: Path, member: str, dest: Path) -> None:
    """Copy ``member`` of the zip ``archive`` to ``dest``."""
    with zipfile.ZipFile(archive) as found, found.open(member) as source, open(dest, "wb") as out:
        shutil.copyfileobj(source, out)


def config_key(name: str) -> str:
    return name.replace("-", "_").replace(".", "_")


def _own_path(name: str) -> Path | None:
    value = luigi.configuration.get_config().get("inputs", config_key(name), None)
    return Path(value) if value else None


def configured_path(name: str) -> Path | None:
    """The path ``[inputs] <name>`` gives for an official file (or its folder key, ``<folder>/<member>``), or None."""
    own = _own_path(name)
    if own is not None:
        return own
    spec = OFFICIAL.get(name)
    config = luigi.configuration.get_config()
    folder = config.get("inputs", spec.folder_key, None) if spec is not None and spec.folder_key else None
    return Path(folder) / spec.member if folder and spec.member else None


class DataFile(luigi.Task):
    name = luigi.ChoiceParameter(choices=tuple(OFFICIAL))

    @property
    def spec(self) -> OfficialFile:
        return OFFICIAL[self.name]

    @property
    def path(self) -> Path:
        return configured_path(self.name) or Path(inputs().data_dir) / self.spec.filename

    def output(self):
        return luigi.LocalTarget(str(self.path))

    def complete(self):
        if configured_path(self.name):
            return self.path.is_file()  # the user's own copy: used as it is
        if not self.path.is_file():
            return False
        algorithm, expected = self.spec.checksum.split(":", 1)
        return content_hash(self.path, algorithm) == expected

    def run(self):
        own = configured_path(self.name)
        if own is not None:
            key = self.spec.folder_key if own != _own_path(self.name) else config_key(self.name)
            raise FileNotFoundError(f"{own}: no such file (luigi.cfg [inputs] {key})")
        if self.path.is_file():
            verify(self.path, self.spec.checksum)  # raises: a wrong local copy is never replaced silently
            return
        self.set_status_message(f"downloading {self.spec.url}")
        say(f"downloading {self.spec.url} -> {self.path}")
        download(self.spec, self.path, inputs().download_timeout_s, progress=self._progress)

    def _progress(self, done: int, total: int | None) -> None:
        tenth = (10 * done // total) if total else done >> 24  # every 10%, or every 16 MiB
        if tenth != getattr(self, "_reported", None):
            self._reported = tenth
            share = f" ({100 * done / total:.0f}%)" if total else ""
            say(f"{self.name}: {done / 1e6:.1f} MB{share}")
            if total:
                self.set_progress_percentage(round(100 * done / total))
