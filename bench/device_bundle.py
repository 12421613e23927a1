"""The GPU run's bundle: everything bench/device_run.sh needs that the lent GPU machine lacks.

    make device-bundle                                  # .device/, checked against a 56 MiB cap
    python -m bench.device_bundle .device --python-version 3.12

The lent machine (docs/benchmarks/gpu.md) has its own Python 3.12 with torch, transformers,
tokenizers, pyarrow and the rest, but no network, no packaged model and no prep pool
(``multiprocess``), and at most 64 MiB travel with a call, the working tree included. So the
folder holds:

- ``wheels/``: the prep pool's ``multiprocess`` and its one dependency ``dill``, the versions this
  venv runs, fetched for CPython ``--python-version`` on manylinux x86-64 with ``--no-deps``
  (both are pure Python; nothing else the run imports is missing there);
- ``model/``: the packaged MiniLM with its float tensors stored as fp16 (half the 87 MiB of the
  fp32 file), its config and tokenizer files; the run loads it as fp32
  (``train.model.load_encoder``), within 1e-2 of the original's hidden states (tested);
- ``data/``: SQuAD v1.1 train (the reconstructed file) and dev, and GAP's three TSVs, xz-compressed;
- ``manifest.json`` (written last): every file with its sha256 and size, the wheels' names and
  versions, where the model and data came from.

The folder is built beside its destination and renamed into place, so a failed build leaves
none; a bundle over ``--max-mib`` is an error. ``--squad-paragraphs`` / ``--gap-rows`` build
the small bundle the CPU dry run's test uses.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import lzma
import os
import shutil
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

MANIFEST = "manifest.json"
SCHEMA_VERSION = 1
# What the run imports that the GPU machine does not have, each with why.
WHEELS = {
    "multiprocess": "the prep pool (prep/pool.py) of the SQuAD and GAP steps",
    "dill": "multiprocess's one dependency (its pickler)",
}
MANYLINUX = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")
SQUAD_FILES = {"squad-train-v1.1": "squad/train-v1.1.reconstructed.json", "squad-dev-v1.1": "squad/dev-v1.1.json"}
GAP_FILES = {f"gap-{split}": f"gap/gap-{split}.tsv" for split in ("development", "validation", "test")}
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
DEFAULT_MAX_MIB = 56.0


def download_wheels(dest: Path, python_version: str, python=sys.executable) -> list[dict]:
    """``pip download`` of :data:`WHEELS` at this environment's versions, for ``python_version``."""
    dest.mkdir(parents=True, exist_ok=True)
    pins = {name: importlib.metadata.version(name) for name in WHEELS}
    # --timeout/--retries and the subprocess timeout: an unreachable index fails in minutes, never hangs.
    command = [python, "-m", "pip", "download", "--quiet", "--timeout", "30", "--retries", "2", "--no-deps",
               "--only-binary=:all:", "--python-version", python_version, "--implementation", "cp",
               *[f"--platform={tag}" for tag in MANYLINUX],
               "--dest", str(dest), *[f"{name}=={version}" for name, version in pins.items()]]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"pip download took over 600 s ({' '.join(command)})") from None
    if done.returncode != 0:
        raise RuntimeError(f"pip download failed ({' '.join(command)}):\n{done.stderr[-2000:]}")
    wheels = []
    for name, version in pins.items():
        stem = name.replace("-", "_")
        found = sorted(dest.glob(f"{stem}-{version}-*.whl"))
        if len(found) != 1:
            raise RuntimeError(f"expected one {name} {version} wheel in {dest}, found {[p.name for p in found]}")
        wheels.append({"name": name, "version": version, "file": f"wheels/{found[0].name}", "why": WHEELS[name]})
    return wheels


def write_fp16_model(source: Path, dest: Path) -> dict:
    """``source``'s weights with every float tensor stored as fp16, plus its config and tokenizer files."""
    import torch
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    tensors = load_file(str(source / "model.safetensors"))
    half = {name: (t.to(torch.float16) if t.is_floating_point() else t).contiguous() for name, t in tensors.items()}
    save_file(half, str(dest / "model.safetensors"), metadata={"format": "pt"})
    for name in MODEL_FILES:
        if (source / name).is_file():
            shutil.copyfile(source / name, dest / name)
    config = json.loads((dest / "config.json").read_text(encoding="utf-8"))
    config["torch_dtype"] = "float16"  # what the file holds; our loader asks for float32 explicitly
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return {"source": str(source), "stored_dtype": "float16", "tensors": len(half),
            "parameters": int(sum(t.numel() for t in half.values()))}


def squad_subset(text: str, paragraphs: int) -> str:
    """The first article of a SQuAD JSON text, cut to its first ``paragraphs`` paragraphs."""
    payload = json.loads(text)
    first = payload["data"][0]
    payload["data"] = [{**first, "paragraphs": first["paragraphs"][:paragraphs]}]
    return json.dumps(payload)


def gap_subset(text: str, rows: int) -> str:
    """A GAP TSV's header and first ``rows`` rows."""
    return "".join(text.splitlines(keepends=True)[: rows + 1])


def write_xz(text: str, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with lzma.open(dest, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as handle:
        handle.write(text)


def write_data(data_root: Path, dest: Path, squad_paragraphs: int | None, gap_rows: int | None) -> dict:
    """The data files, xz-compressed under ``dest`` (subsets when asked); ``{key: record}``."""
    records = {}
    for key, relative in {**SQUAD_FILES, **GAP_FILES}.items():
        source = data_root / relative
        text = source.read_text(encoding="utf-8")
        limit = squad_paragraphs if key.startswith("squad") else gap_rows
        if limit:
            text = squad_subset(text, limit) if key.startswith("squad") else gap_subset(text, limit)
        name = Path(relative).name + ".xz"
        write_xz(text, dest / name)
        records[key] = {"file": f"data/{name}", "name": Path(relative).name, "source": str(source),
                        "subset": f"first {limit} {'paragraphs' if key.startswith('squad') else 'rows'}"
                        if limit else None}
    return records


def folder_files(folder: Path) -> list[dict]:
    from prep.artifact import sha256_file

    return [{"path": str(path.relative_to(folder)), "sha256": sha256_file(path), "bytes": path.stat().st_size}
            for path in sorted(folder.rglob("*")) if path.is_file() and path.name != MANIFEST]


def build_bundle(out: Path, model_dir: Path, data_root: Path, python_version: str = "3.12",
                 max_mib: float = DEFAULT_MAX_MIB, squad_paragraphs: int | None = None,
                 gap_rows: int | None = None) -> dict:
    """Write the bundle folder ``out`` (replaced atomically); returns its manifest."""
    from prep.artifact import replace_dir, write_json_atomic

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    try:
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "python_version": python_version,
            "wheels": download_wheels(tmp / "wheels", python_version),
            "model": {"folder": "model", **write_fp16_model(model_dir, tmp / "model")},
            "data": write_data(data_root, tmp / "data", squad_paragraphs, gap_rows),
            "files": folder_files(tmp),
        }
        manifest["total_bytes"] = sum(f["bytes"] for f in manifest["files"])
        if manifest["total_bytes"] > max_mib * 2**20:
            parts = ", ".join(f"{f['path']} {f['bytes'] / 2**20:.1f} MiB" for f in manifest["files"])
            raise ValueError(f"the bundle is {manifest['total_bytes'] / 2**20:.1f} MiB, over its {max_mib:g} MiB cap "
                             f"(what travels with a device call is 64 MiB, the working tree included): {parts}")
        write_json_atomic(tmp / MANIFEST, manifest)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def main(argv: list[str] | None = None) -> int:
    from prep.models import resolve_model

    repo = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(prog="python -m bench.device_bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the bundle folder (replaced), e.g. .device")
    parser.add_argument("--python-version", default="3.12", help="the GPU machine's Python (wheel tags)")
    parser.add_argument("--model", default=None, help="encoder folder or Hub id (default: the packaged MiniLM)")
    parser.add_argument("--data-root", type=Path,
                        default=Path(os.environ.get("BERTFLOW_DATA", repo.parent / "shared" / "data")),
                        help="folder holding squad/ and gap/ (default: $BERTFLOW_DATA or ../shared/data)")
    parser.add_argument("--max-mib", type=float, default=DEFAULT_MAX_MIB, help="fail above this size")
    parser.add_argument("--squad-paragraphs", type=int, default=None,
                        help="tests: keep only the first article's first N paragraphs of each SQuAD file")
    parser.add_argument("--gap-rows", type=int, default=None, help="tests: keep only each GAP file's first N rows")
    args = parser.parse_args(argv)
    try:
        manifest = build_bundle(args.out, resolve_model(args.model), args.data_root, args.python_version,
                                args.max_mib, args.squad_paragraphs, args.gap_rows)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"python -m bench.device_bundle: error: {err}", file=sys.stderr)
        return 1
    for entry in manifest["files"]:
        print(f"{entry['bytes'] / 2**20:8.2f} MiB  {entry['path']}")
    print(f"{manifest['total_bytes'] / 2**20:8.2f} MiB  in all -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
