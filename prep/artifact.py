"""Atomic output folders and the manifest that says what is in them.

A prep run writes into a hidden sibling folder and renames it into place only after
``manifest.json`` is written, so a killed run never leaves a folder that looks complete. One
writer at a time: a second run writing the same folder waits for the first (``prep.locking``).

Every temp name carries its writer's pid: ``.<name>.tmp-<pid>`` (:func:`atomic_file`),
``.<name>.tmp-<pid>-<id>`` (:func:`atomic_output_dir`, a model folder), ``.<name>.old-<pid>-<id>``
(:func:`replace_dir`'s old copy on its way out). A process killed while writing leaves one
behind; :func:`remove_stale_temps` deletes those whose process is gone (never a live writer's),
and every writer does so for its own target before it writes.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path

from prep.folders import MANIFEST
from prep.locking import artifact_lock

SCHEMA_VERSION = 1


def file_digest(path: str | Path, algorithm: str = "sha256", block_size: int = 1 << 20) -> str:
    """Hex digest of a file's bytes with any hashlib ``algorithm``, read in blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(block_size):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_file(path: str | Path) -> str:
    return file_digest(path, "sha256")


def is_complete(out_dir: str | Path) -> bool:
    """True when ``out_dir`` holds a finished prep output (its manifest exists)."""
    return (Path(out_dir) / MANIFEST).is_file()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.(?:tmp|old)-(?P<pid>[0-9]+)(?:-[0-9a-f]+)?")


def temp_writer(path: str | Path) -> int | None:
    """The pid in a temp name written here (``.<name>.tmp-<pid>[-<id>]``, ``.<name>.old-<pid>-<id>``), else None."""
    found = _TEMP_NAME.fullmatch(Path(path).name)
    return int(found["pid"]) if found else None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temps(folder: str | Path, recursive: bool = False, target: str | None = None) -> list[Path]:
    """Delete the temp files and folders in ``folder`` (and below it, ``recursive``) whose writing
    process is gone; returns what was deleted. ``target``: only the temps of that name (``last.pt``).

    A temp of a live process is someone writing now, and is left alone. The pid is this host's:
    folders written from several hosts at once are not swept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    pattern = f".{glob.escape(target)}.*" if target is not None else ".*"
    for path in sorted(folder.rglob(pattern) if recursive else folder.glob(pattern)):
        pid = temp_writer(path)
        if pid is None or pid == os.getpid() or _pid_alive(pid) or not (path.exists() or path.is_symlink()):
            continue
        if target is not None and _TEMP_NAME.fullmatch(path.name)["target"] != target:
            continue
        _remove(path)
        removed.append(path)
    return removed


def _remove_stale_temps(out_dir: Path) -> None:
    """Delete temp folders (and old copies) left by runs of this output that were killed (their pid is gone)."""
    remove_stale_temps(out_dir.parent, target=out_dir.name)


@contextlib.contextmanager
def atomic_output_dir(out_dir: str | Path, overwrite: bool = True, reuse_if_made_while_waiting: bool = False,
                      marker: str = MANIFEST):
    """Yield a temp folder; on success it replaces ``out_dir`` in one rename, on error it is removed.

    The block must write ``marker`` (the file written last, ``manifest.json`` by default). It runs
    under ``out_dir``'s lock, so two runs never write it at once: the second waits. With
    ``reuse_if_made_while_waiting``, a run that waited and then finds ``out_dir`` complete gets
    ``None`` instead of a folder and leaves ``out_dir`` as the other run made it.
    """
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with artifact_lock(out_dir, "writing") as lock:
        if reuse_if_made_while_waiting and lock.waited and (out_dir / marker).is_file():
            yield None
            return
        if out_dir.exists() and not overwrite:
            raise FileExistsError(f"{out_dir} exists (pass overwrite to replace it)")
        _remove_stale_temps(out_dir)
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            yield tmp
            if not (tmp / marker).is_file():
                raise RuntimeError(f"internal error: {tmp} finished without {marker}")
            replace_dir(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def replace_dir(new: Path, final: Path) -> None:
    """Put folder ``new`` at ``final``, replacing a folder already there (moved aside, then removed)."""
    if final.exists():
        # rename() cannot replace a non-empty folder: move the old one aside first.
        trash = final.parent / f".{final.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        os.replace(final, trash)
        os.replace(new, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, final)


@contextlib.contextmanager
def atomic_file(path: str | Path):
    """Yield a temp path beside ``path``; on success it is fsynced and renamed over ``path``, on error removed.

    The one way files are written in place here (JSON records, checkpoints, model heads).
    """
    path = Path(path)
    remove_stale_temps(path.parent, target=path.name)  # a killed writer's, so they never pile up
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)  # the rename itself survives a power cut
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_file`)."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json_atomic(path: str | Path, payload) -> None:
    """``payload`` as indented UTF-8 JSON at ``path``, atomically."""
    write_text_atomic(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def read_manifest(out_dir: str | Path) -> dict:
    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"{out_dir}: no {MANIFEST}; not a finished prep output (run python -m prep <task> first)"
        )
    manifest = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(
            f"{path}: schema_version {manifest.get('schema_version')} != {SCHEMA_VERSION}; "
            "re-run prep with this version"
        )
    return manifest
