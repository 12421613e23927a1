"""A labelled CSV / TSV / JSONL / Parquet -> folded BERT windows in Arrow, on the shared prep pool.

    python -m prep textclass train.csv runs/tc-train --text-column Text --label-column Category
    python -m prep textclass test.jsonl runs/tc-test --labels '["business", "sport", "tech"]' --nproc 2
    python -m prep textclass pairs.tsv runs/tc-nli --text-pair-column hypothesis --no-fold

Token folding (the seed write-up's "folding"): a text is tokenized once, without special
tokens, and cut into consecutive windows of ``room = max_seq_length - 2`` tokens, each one
feature ``[CLS] window [SEP]`` that inherits the text's label. Window starts advance by
``room - fold_stride``, so ``fold_stride`` is the overlap between neighbours (0: plain
folding), the same cut as a Hugging Face fast tokenizer's ``return_overflowing_tokens`` with
``stride``; the last window may be shorter. Evaluation pools a text's window logits back into
one prediction. ``--no-fold`` keeps only the first window (plain truncation).

With ``text_pair_column`` each feature is ``[CLS] window [SEP] pair [SEP]`` (token types 1 on
``pair [SEP]``): the pair text is kept whole in every window, cut to at most half of
``max_seq_length - 3`` tokens when longer, and the first text is folded in the room left.

Class ids are positions in the ordered label set: the data's labels sorted (integers
numerically), or ``--labels`` (a JSON list) so train / validation / test share ids; an example
whose label is not in that list is skipped and listed in the manifest. Unlabelled texts
(``prepare_textclass(..., labelled=False)``, for predictions) have no label column to read and
carry :data:`NO_LABEL` (regression: NaN); the label set is ``--labels``, the run's.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from prep.folders import MANIFEST
from prep.stage import ReadResult, run_stage, skip
from prep.tokenizer import BertTokens, default_model_dir, load_backend
from tasks.textclass.read import (FORMATS, LABEL_TYPES, SKIP_UNKNOWN_LABEL, TextExample, integer_name,
                                parse_label_list, read_examples, resolve_label_type)

_SPECIAL_TOKENS = 2  # [CLS] window [SEP]
_PAIR_SPECIAL_TOKENS = 3  # [CLS] window [SEP] pair [SEP]

# One row per window. The label column is int32 (class id) or, for regression, float32.
FEATURES_SCHEMA = pa.schema([
    ("feature_id", pa.int64()),
    ("example_id", pa.string()),
    ("example_index", pa.int32()),
    ("input_ids", pa.list_(pa.int32())),
    ("token_type_ids", pa.list_(pa.int8())),
    ("label", pa.int32()),
    ("window_index", pa.int16()),
    ("num_windows", pa.int16()),
])
REGRESSION_SCHEMA = FEATURES_SCHEMA.set(FEATURES_SCHEMA.get_field_index("label"), pa.field("label", pa.float32()))
_MAX_WINDOWS = 2**15 - 1  # int16 window_index / num_windows
NO_LABEL = -1  # an unlabelled text's class id (predictions on new data)


@dataclass(frozen=True)
class TextClassPrepConfig:
    max_seq_length: int = field(default=128, metadata={"help": "tokens per window, [CLS] and [SEP] included"})
    fold: bool = field(default=True, metadata={
        "help": "cut a long text into consecutive windows (each a feature with the text's label); "
                "--no-fold keeps the first window only"})
    fold_stride: int = field(default=0, metadata={
        "help": "overlap in tokens between a text's consecutive windows (0: plain folding)"})
    text_column: str = field(default="text", metadata={"help": "column (JSON key) holding the text"})
    label_column: str = field(default="label", metadata={"help": "column (JSON key) holding the label"})
    text_pair_column: str | None = field(default=None, metadata={
        "help": "column with a second text, kept whole in every window: [CLS] text [SEP] pair [SEP]"})
    id_column: str | None = field(default=None, metadata={
        "help": "column with each row's unique id (default: row-<line>)"})
    format: str | None = field(default=None, metadata={
        "help": "input format (default: from the file extension)", "choices": FORMATS})
    label_type: str = field(default="auto", metadata={
        "help": "auto: int when every label is an integer, else str; float: regression", "choices": LABEL_TYPES})
    labels: str | None = field(default=None, metadata={
        "help": "the label set in class-id order as a JSON list, e.g. '[\"neg\", \"pos\"]' (the training "
                "split's, so every split shares ids); default: the data's labels, sorted"})

    def __post_init__(self):
        for name in ("max_seq_length", "fold_stride"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {value!r}")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {self.format!r}")
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {self.label_type!r}")
        minimum = _PAIR_SPECIAL_TOKENS + 2 if self.text_pair_column else _SPECIAL_TOKENS + 1
        if self.max_seq_length < minimum:
            raise ValueError(f"max_seq_length must be >= {minimum}, got {self.max_seq_length}")
        if not 0 <= self.fold_stride < self.min_text_room:
            raise ValueError(
                f"fold_stride must be >= 0 and below the text's room per window ({self.min_text_room} tokens "
                f"at max_seq_length {self.max_seq_length}), got {self.fold_stride}: windows would not advance"
            )
        if not self.text_column or not self.label_column:
            raise ValueError("text_column and label_column must be non-empty")
        if self.labels is not None:
            if self.label_type == "float":
                raise ValueError("labels fixes a classifier's label set; label_type float (regression) has none")
            parse_label_list(self.labels, self.label_type)

    @property
    def regression(self) -> bool:
        return self.label_type == "float"

    @property
    def max_pair_tokens(self) -> int:
        """A pair text is cut to this many tokens, so the first text keeps at least half the room."""
        return (self.max_seq_length - _PAIR_SPECIAL_TOKENS) // 2

    @property
    def min_text_room(self) -> int:
        """First-text tokens a window holds at the least (the pair at its longest)."""
        if self.text_pair_column:
            return self.max_seq_length - _PAIR_SPECIAL_TOKENS - self.max_pair_tokens
        return self.max_seq_length - _SPECIAL_TOKENS

    def label_list(self) -> list[str] | None:
        """``labels`` as names in class-id order, or None when the data decides."""
        return None if self.labels is None else parse_label_list(self.labels, self.label_type)

    @property
    def schema(self) -> pa.Schema:
        return REGRESSION_SCHEMA if self.regression else FEATURES_SCHEMA


class TextClassChunk(NamedTuple):
    """One pool task: the config, the label names in class-id order, and ``(example_index, example)`` pairs."""

    config: TextClassPrepConfig
    labels: tuple[str, ...]
    examples: list[tuple[int, TextExample]]


def fold_spans(num_tokens: int, room: int, fold_stride: int = 0) -> list[tuple[int, int]]:
    """``[start, stop)`` windows of at most ``room`` tokens, starts ``room - fold_stride`` apart.

    Same cut as ``tokenizers``' overflow with ``stride`` (truncation direction right): the last
    window ends at the text's end and may be shorter. An empty text gives no window.
    """
    if room < 1 or not 0 <= fold_stride < room:
        raise ValueError(f"need room >= 1 and 0 <= fold_stride < room, got room={room}, fold_stride={fold_stride}")
    spans, start = [], 0
    while start < num_tokens:
        stop = min(start + room, num_tokens)
        spans.append((start, stop))
        if stop == num_tokens:
            break
        start += room - fold_stride
    return spans


class Windows(NamedTuple):
    """A text's features: one ``input_ids`` / ``token_type_ids`` row per window."""

    input_ids: list[list[int]]
    token_type_ids: list[list[int]]
    text_cut: bool  # --no-fold dropped the text's tokens after its first window
    pair_cut: bool  # the pair text was cut to max_pair_tokens


def build_windows(ids: list[int], pair_ids: list[int] | None, special: BertTokens,
                  config: TextClassPrepConfig) -> Windows:
    """A text's windows from its tokens (no special tokens); none for a text without tokens."""
    pair_cut = False
    if pair_ids is None:
        room, tail, tail_types = config.max_seq_length - _SPECIAL_TOKENS, [special.sep_id], [0]
    else:
        pair_cut = len(pair_ids) > config.max_pair_tokens
        pair_ids = pair_ids[:config.max_pair_tokens]
        room = config.max_seq_length - _PAIR_SPECIAL_TOKENS - len(pair_ids)
        tail = [special.sep_id, *pair_ids, special.sep_id]
        tail_types = [0] + [1] * (len(pair_ids) + 1)
    # A pair shorter than its cap leaves more room than min_text_room, so the stride stays valid.
    spans = fold_spans(len(ids), room, config.fold_stride)
    text_cut = not config.fold and len(spans) > 1
    if not config.fold:
        spans = spans[:1]
    input_ids = [[special.cls_id, *ids[start:stop], *tail] for start, stop in spans]
    type_ids = [[0] * (stop - start + 1) + tail_types for start, stop in spans]
    return Windows(input_ids, type_ids, text_cut, pair_cut)


def setup_worker(export):
    return load_backend(export)


def convert_chunk(state, chunk: TextClassChunk) -> tuple[dict, dict]:
    """Turn a :class:`TextClassChunk` into window columns (see ``FEATURES_SCHEMA``) and counts."""
    backend, special = state
    config = chunk.config
    examples = [example for _, example in chunk.examples]
    encodings = backend.encode_batch([ex.text for ex in examples], add_special_tokens=False)
    pairs = ([None] * len(examples) if config.text_pair_column is None else
             [e.ids for e in backend.encode_batch([ex.text_pair for ex in examples], add_special_tokens=False)])
    class_id = {name: i for i, name in enumerate(chunk.labels)}
    columns = {name: [] for name in config.schema.names[1:]}
    skipped, folded, truncated, pairs_cut = [], 0, 0, 0
    for (index, example), encoding, pair_ids in zip(chunk.examples, encodings, pairs):
        windows = build_windows(encoding.ids, pair_ids, special, config)
        input_ids = windows.input_ids
        if not input_ids:
            skipped.append(skip(example.example_id, "text has no tokens", where=example.where))
            continue
        if len(input_ids) > _MAX_WINDOWS:
            skipped.append(skip(example.example_id, f"more than {_MAX_WINDOWS} windows", where=example.where))
            continue
        folded += len(input_ids) > 1
        truncated += windows.text_cut
        pairs_cut += windows.pair_cut
        if example.label is None:  # unlabelled (predictions)
            label = float("nan") if config.regression else NO_LABEL
        else:
            label = example.label if config.regression else class_id[example.label]
        columns["example_id"] += [example.example_id] * len(input_ids)
        columns["example_index"] += [index] * len(input_ids)
        columns["input_ids"] += input_ids
        columns["token_type_ids"] += windows.token_type_ids
        columns["label"] += [label] * len(input_ids)
        columns["window_index"] += range(len(input_ids))
        columns["num_windows"] += [len(input_ids)] * len(input_ids)
    stats = {"examples_converted": len(examples) - len(skipped), "windows": len(columns["example_id"]),
             "texts_folded": folded, "texts_truncated": truncated, "pairs_truncated": pairs_cut, "skipped": skipped}
    return (columns if columns["example_id"] else {}), stats


def split_folder_labels(path: Path) -> list[str] | None:
    """The ordered label set of the split folder ``path`` is in (split.write_splits), or None."""
    manifest = path.parent / MANIFEST
    if not manifest.is_file():
        return None
    record = json.loads(manifest.read_text(encoding="utf-8"))
    if record.get("kind") != "splits" or record.get("label_type") == "float":
        return None
    return list(record["labels"])


def read_textclass(path: str | Path, config: TextClassPrepConfig, rows_per_chunk: int = 64,
                   labelled: bool = True) -> ReadResult:
    """Read ``path`` with ``config``'s columns into pool chunks, the label set fixed.

    ``example_index`` is a text's position among the examples :func:`read_examples` keeps, so
    evaluation can re-read the file and index it. With ``config.labels``, examples whose label
    is outside that list are skipped. ``labelled=False``: the label column is not read (it need
    not exist); the label set and type are ``config``'s.
    """
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
    given = config.label_list()
    if given is None and labelled:  # a file of a split folder: its manifest fixes the label order for every split
        given = split_folder_labels(Path(path))
    columns = (config.format, config.text_column, config.label_column if labelled else None,
               config.text_pair_column, config.id_column)
    if not labelled:
        examples, skipped, info = read_examples(path, *columns, "str")
        indexed = list(enumerate(examples))
        info.update(labels=given or [], labelled=False,
                    label_type="float" if config.regression else resolve_label_type(config.label_type, given or []))
    elif given is None:
        examples, skipped, info = read_examples(path, *columns, config.label_type)
        indexed = list(enumerate(examples))
    else:
        list_type = resolve_label_type(config.label_type, given)
        # Under auto the given list decides the type, so every split reads labels alike; labels are
        # read as written, so a data label outside the list is skipped (not a format error).
        examples, skipped, info = read_examples(path, *columns, "str" if config.label_type == "auto" else list_type)
        if list_type == "int":
            examples = [ex._replace(label=integer_name(ex.label)) for ex in examples]
        indexed = list(enumerate(examples))
        known = set(given)
        unknown = [(i, ex) for i, ex in indexed if ex.label not in known]
        indexed = [(i, ex) for i, ex in indexed if ex.label in known]
        skipped = skipped + [skip(ex.example_id, SKIP_UNKNOWN_LABEL, where=ex.where) for _, ex in unknown]
        info.update(label_type=list_type, labels=given)
    info.update(texts=len(indexed), windows=0)
    chunks = [TextClassChunk(config, tuple(info["labels"]), indexed[i:i + rows_per_chunk])
              for i in range(0, len(indexed), rows_per_chunk)]
    return ReadResult(chunks=chunks, examples_in=info["rows"], skipped=skipped, info=info)


def split_name(input_path: str | Path) -> str:
    """``bbc-news/train.csv`` -> ``train``: the split recorded in the manifest and file names."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", Path(input_path).stem) or "data"


def prepare_textclass(
    input_path: str | Path,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    config: TextClassPrepConfig = TextClassPrepConfig(),
    nproc: int = 1,
    mode: str = "shards",
    rows_per_chunk: int = 64,
    reserve_cpus: int = 1,
    progress=None,
    labelled: bool = True,
) -> dict:
    """Build folded window features from ``input_path`` into ``out_dir``; returns the manifest.

    Raises :class:`TextClassFormatError` on a file that cannot be read; rows that are well
    formed but unusable are skipped and listed in the manifest. ``manifest["input"]`` is the
    training data's info a model is built from (``labels``, ``label_type``, columns, counts).
    ``labelled=False``: texts without labels (predictions; see :func:`read_textclass`).
    """
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_model_dir()
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
    read_result: list[ReadResult] = []

    def read(path: Path) -> ReadResult:
        read_result.append(read_textclass(path, config, rows_per_chunk, labelled))
        return read_result[0]

    def count_windows(done: int, total: int, windows: int) -> None:
        # The stage builds the manifest's input record from the reader's info after the last
        # chunk is in, so the windows written so far become its final window count.
        read_result[0].info["windows"] = windows
        if progress is not None:
            progress(done, total, windows)

    return run_stage(
        dataset="textclass", split=split_name(input_path), input_path=Path(input_path), out_dir=Path(out_dir),
        config=asdict(config), tokenizer_dir=tokenizer_dir, read=read, setup=setup_worker,
        convert=convert_chunk, schema=config.schema, nproc=nproc, mode=mode,
        reserve_cpus=reserve_cpus, progress=count_windows,
    )


def summarize(manifest: dict, out_dir: Path) -> str:
    """The one-paragraph report the CLI prints."""
    counts, info = manifest["counts"], manifest["input"]
    reasons = "; ".join(f"{n} {reason}" for reason, n in sorted(manifest["skip_reasons"].items())) or "none"
    labels = f"{len(info['labels'])} labels" if info["labels"] else "regression"
    folding = (f"{counts.get('texts_folded', 0)} texts folded into several windows"
               if manifest["config"]["fold"] else f"{counts.get('texts_truncated', 0)} texts truncated")
    return (
        f"textclass {manifest['split']}: {counts['features_out']} windows from "
        f"{counts['examples_converted']}/{counts['examples_in']} texts ({labels}), "
        f"{counts['examples_skipped']} skipped ({reasons}); {folding} at "
        f"{manifest['config']['max_seq_length']} tokens; {manifest['seconds']:.1f}s on "
        f"{manifest['nproc']} process(es) ({manifest['mode']}) -> {out_dir}"
    )
