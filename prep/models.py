"""A pretrained encoder by local folder or by Hugging Face Hub id: the one resolver every entry point uses.

    python -m train --task gap --features DIR --out runs/gap --model sentence-transformers/all-MiniLM-L6-v2
    python -m prep gap gap-development.tsv runs/gap-dev --model-dir bert-base-uncased@main
    luigi --module pipeline FullRun --model-dir org/name@<40-hex commit>

An entry point calls :func:`resolve_model` once and hands the engines the local folder it returns;
no engine ever sees a Hub id. A path that exists wins. Anything else that reads as a Hub id
(``name`` or ``org/name``, optionally ``@revision``: a branch, tag or commit) is fetched by
``huggingface_hub.snapshot_download`` into the Hugging Face cache, only the files an encoder needs
(config, tokenizer files, safetensors weights). huggingface_hub reads its own environment:
``HF_HOME`` / ``HF_HUB_CACHE`` (where the cache is), ``HF_ENDPOINT`` (a mirror), ``HF_HUB_OFFLINE=1``
(the cache alone, no request).

The cache folder of a snapshot is named after its commit (``.../models--org--name/snapshots/<commit>``).
Artifact names record that commit: the Luigi parameters hold ``org/name@<commit>`` (:func:`pin_model`),
so a moved branch gives new names and a pinned revision never does; manifests and
``train_config.json`` record ``{"hub_id", "revision", "commit"}`` (:func:`hub_source`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

# What an encoder needs from a Hub repository: its config, every tokenizer file a fast tokenizer may
# be built from, and safetensors weights (sharded ones with their index). Top level only: sentence-
# transformers repositories keep pooling and dense layers (and some, ONNX exports) in sub-folders.
HUB_FILES = (
    "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "vocab.txt", "vocab.json", "merges.txt", "spm.model", "sentencepiece.bpe.model", "*.safetensors",
    "model.safetensors.index.json",
)
_SUB_FOLDERS = ("*/*",)

# A Hub repository id: ``name`` or ``org/name`` of letters, digits, ``-``, ``_`` and ``.``, starting and
# ending with a letter or digit (the Hub refuses ``--`` and ``..`` inside); a revision follows ``@``.
_NAME = r"[A-Za-z0-9](?:[\w.-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"(?P<repo>(?:{_NAME}/)?{_NAME})(?:@(?P<revision>\S+))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a local folder nor a Hub id that can be had (the message says why, in one line)."""


def parse_hub_id(ref: str) -> tuple[str, str | None] | None:
    """``(repo_id, revision or None)`` when ``ref`` reads as a Hub id, else None."""
    match = _HUB_ID.fullmatch(str(ref))
    if match is None or "--" in match["repo"] or ".." in match["repo"]:
        return None
    return match["repo"], match["revision"]


def is_commit(revision: str | None) -> bool:
    return revision is not None and _COMMIT.fullmatch(revision) is not None


def resolve_model(ref: str | Path | None) -> Path:
    """The local folder of the model ``ref``: None is the packaged MiniLM, an existing path is itself,
    a Hub id is its snapshot folder in the Hugging Face cache (downloaded when missing there).

    Raises :class:`ModelNotFoundError` (a FileNotFoundError) naming ``ref`` when there is no such folder
    and the Hub has no such id or revision, or when HF_HUB_OFFLINE=1 and the cache lacks it.
    """
    if ref is None:
        from prep.tokenizer import default_model_dir

        return default_model_dir()
    path = Path(ref).expanduser()
    if path.exists():
        return path
    parsed = parse_hub_id(str(ref))
    if parsed is None:
        raise ModelNotFoundError(f"{ref}: no such folder (a model is a local folder or a Hugging Face Hub id, "
                                 "org/name[@revision])")
    folder = _download(str(ref), *parsed)
    missing = [what for what, found in (("config.json", (folder / "config.json").is_file()),
                                        ("safetensors weights", any(folder.glob("*.safetensors")))) if not found]
    if missing:
        raise ModelNotFoundError(f"{ref}: the Hub repository at commit {folder.name} has no {' and no '.join(missing)} "
                                 "(an encoder here needs config.json and *.safetensors)")
    return folder


def _download(ref: str, repo_id: str, revision: str | None) -> Path:
    """``repo_id`` at ``revision``'s snapshot folder, each failure turned into one line naming ``ref``."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                        RevisionNotFoundError)

    where = f"the Hub ({constants.ENDPOINT})"
    for name in ("httpx", "httpx2"):  # their INFO line per request would drown an entry point's own log
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(HUB_FILES),
                                      ignore_patterns=list(_SUB_FOLDERS)))
    except RevisionNotFoundError:
        raise ModelNotFoundError(f"{ref}: {where} has {repo_id} but no revision {revision!r} "
                                 "(a branch, tag or commit)") from None
    except RepositoryNotFoundError:
        raise ModelNotFoundError(f"{ref}: no such folder, and no model {repo_id!r} on {where} "
                                 "(a private or gated one needs `hf auth login`)") from None
    except LocalEntryNotFoundError:
        if constants.HF_HUB_OFFLINE:
            raise ModelNotFoundError(f"{ref}: no such folder, and not in the Hugging Face cache while "
                                     "HF_HUB_OFFLINE=1: fetch it once with HF_HUB_OFFLINE unset, or give a local "
                                     "model folder") from None
        raise ModelNotFoundError(f"{ref}: no such folder, {where} could not be reached and the Hugging Face "
                                 f"cache ({constants.HF_HUB_CACHE}) lacks it") from None
    except HfHubHTTPError as err:
        raise ModelNotFoundError(f"{ref}: {where} answered {err.response.status_code} for {repo_id}") from None


def pin_model(ref: str) -> str:
    """``ref`` as artifact names record it: a Hub id becomes ``repo_id@<commit>`` (resolving, and so
    fetching, it); a path that exists and an id already pinned to a commit are left as they are."""
    parsed = None if Path(ref).expanduser().exists() else parse_hub_id(ref)
    if parsed is None or is_commit(parsed[1]):
        return ref
    return f"{parsed[0]}@{resolve_model(ref).name}"


def hub_source(folder: str | Path) -> dict | None:
    """``{"hub_id", "revision", "commit"}`` when ``folder`` is a snapshot in the Hugging Face cache, else None.

    ``revision`` is the branches and tags the cache knows to point at this commit (``main``), or the
    commit itself where none does (the id was pinned to it).
    """
    folder = Path(folder)
    repo_dir = folder.parent.parent
    if folder.parent.name != "snapshots" or not repo_dir.name.startswith("models--") or not is_commit(folder.name):
        return None
    refs_dir = repo_dir / "refs"
    refs = sorted(str(ref.relative_to(refs_dir)) for ref in refs_dir.rglob("*")
                  if ref.is_file() and ref.read_text().strip() == folder.name) if refs_dir.is_dir() else []
    return {"hub_id": repo_dir.name[len("models--"):].replace("--", "/"), "revision": ", ".join(refs) or folder.name,
            "commit": folder.name}
