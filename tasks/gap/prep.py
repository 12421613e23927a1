"""GAP (gendered ambiguous pronouns) TSV -> encoder features with P/A/B spans, in Arrow.

    python -m prep.gap ../shared/data/gap/gap-development.tsv runs/gap-development --nproc 4
    python -m prep.gap gap-test.tsv runs/gap-test --mode merge --max-seq-length 256 --tokenizer DIR

Each row becomes one feature ``[CLS] text-window [SEP]`` (see docs/feature_schema.md; the special
tokens are the tokenizer's own, e.g. ``<s> text-window </s>`` for RoBERTa / MPNet) with the
sub-token spans of the pronoun P and the names A and B, ``segment_ids`` marking them 1/2/3 for
the segmentation head, the label (0 = A, 1 = B, 2 = NEITHER) and the gender of the pronoun.

The text is tokenized once, with character offsets; a mention's sub-tokens are those whose
character span overlaps the mention's ``[offset, offset + len(name))``. A text longer than
``max_seq_length - 2`` tokens (2: the tokenizer's special tokens around one sequence) keeps one window of that many tokens around P, A and B (centred
on the stretch from the first to the last of them, moved back inside the text at its ends); a
row whose P, A and B are further apart than the window is skipped with that reason.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from tasks.gap.read import GapExample, read_gap
from prep.stage import ReadResult, run_stage, skip
from prep.tokenizer import SpecialTokens, TokenizerExport, default_model_dir, load_backend

_SPECIAL_TOKENS = 2  # [CLS] window [SEP] (BERT) or <s> window </s> (RoBERTa, MPNet): the config's check
# P, A and B must each keep at least one token of their own, plus [CLS] and [SEP].
_MIN_SEQ_LENGTH = 3 + _SPECIAL_TOKENS
SEGMENT_PRONOUN, SEGMENT_A, SEGMENT_B = 1, 2, 3

GAP_SCHEMA = pa.schema([
    ("feature_id", pa.int64()),
    ("example_id", pa.string()),
    ("example_index", pa.int32()),
    ("input_ids", pa.list_(pa.int32())),
    ("segment_ids", pa.list_(pa.int8())),
    ("p_start", pa.int32()),
    ("p_end", pa.int32()),
    ("a_start", pa.int32()),
    ("a_end", pa.int32()),
    ("b_start", pa.int32()),
    ("b_end", pa.int32()),
    ("label", pa.int8()),
    ("gender", pa.string()),
])


@dataclass(frozen=True)
class GapPrepConfig:
    max_seq_length: int = field(default=256, metadata={
        "help": "tokens per feature, [CLS] and [SEP] included; a longer text keeps a window around P, A and B"})

    def __post_init__(self):
        if not isinstance(self.max_seq_length, int) or isinstance(self.max_seq_length, bool):
            raise TypeError(f"max_seq_length must be an int, got {self.max_seq_length!r}")
        if self.max_seq_length < _MIN_SEQ_LENGTH:
            raise ValueError(
                f"max_seq_length must be >= {_MIN_SEQ_LENGTH} ([CLS], P, A, B, [SEP]), got {self.max_seq_length}"
            )

    @property
    def max_window_tokens(self) -> int:
        """Text tokens a feature can hold between [CLS] and [SEP] (a BERT / RoBERTa layout)."""
        return self.max_seq_length - _SPECIAL_TOKENS

    def window_tokens(self, special: SpecialTokens) -> int:
        """Text tokens a feature can hold with ``special``'s single-sequence layout."""
        room = self.max_seq_length - special.single_specials
        if room < 3:
            raise ValueError(f"max_seq_length {self.max_seq_length} leaves {room} text tokens "
                             f"next to this tokenizer's {special.single_specials} special tokens; P, A and B need 3")
        return room


class GapChunk(NamedTuple):
    """What one pool task carries: the config (workers get nothing else) and the rows."""

    config: GapPrepConfig
    examples: list[GapExample]


class GapFeature(NamedTuple):
    input_ids: list[int]
    segment_ids: list[int]
    pronoun: tuple[int, int]  # [start, end) in input_ids
    a: tuple[int, int]
    b: tuple[int, int]
    windowed: bool


def mention_tokens(starts: list[int], ends: list[int], char_span: tuple[int, int]) -> tuple[int, int]:
    """``[first, end)`` of the tokens whose character span overlaps ``char_span`` (empty if none).

    ``starts``/``ends`` are the tokens' character offsets, both non-decreasing (WordPiece keeps
    tokens in text order without overlap), so two binary searches find the run.
    """
    char_start, char_end = char_span
    first = bisect.bisect_right(ends, char_start)  # first token ending after the mention starts
    end = bisect.bisect_left(starts, char_end)  # tokens starting before the mention ends
    return first, max(first, end)


def window_start(num_tokens: int, room: int, lo: int, hi: int) -> int:
    """Start of the ``room``-token window centred on tokens ``[lo, hi)``, kept inside the text."""
    if num_tokens <= room:
        return 0
    start = lo - (room - (hi - lo)) // 2
    return min(max(start, 0), num_tokens - room)


def build_feature(example: GapExample, ids: list[int], offsets: list[tuple[int, int]],
                  special: SpecialTokens, max_window_tokens: int) -> tuple[GapFeature | None, str | None]:
    """One row's feature from its text's tokens, or ``(None, reason)`` when it cannot be built."""
    starts = [start for start, _ in offsets]
    ends = [end for _, end in offsets]
    spans = {}
    for name, char_span in (("Pronoun", example.pronoun), ("A", example.a), ("B", example.b)):
        first, end = mention_tokens(starts, ends, char_span)
        if first == end:
            return None, f"{name} has no tokens"
        spans[name] = (first, end)
    ordered = sorted(spans.values())
    if any(left[1] > right[0] for left, right in zip(ordered, ordered[1:])):
        # One sub-token cannot carry two segment ids.
        return None, "mentions share a sub-token"
    lo, hi = ordered[0][0], max(end for _, end in ordered)
    if hi - lo > max_window_tokens:
        return None, f"P, A and B span more than {max_window_tokens} tokens"
    start = window_start(len(ids), max_window_tokens, lo, hi)
    window = ids[start:start + max_window_tokens]
    input_ids = [*special.single_prefix, *window, *special.single_suffix]
    shift = len(special.single_prefix) - start  # text token i sits at i + shift in input_ids
    segment_ids = [0] * len(input_ids)
    placed = {}
    for name, value in (("Pronoun", SEGMENT_PRONOUN), ("A", SEGMENT_A), ("B", SEGMENT_B)):
        first, end = spans[name][0] + shift, spans[name][1] + shift
        segment_ids[first:end] = [value] * (end - first)
        placed[name] = (first, end)
    return GapFeature(input_ids, segment_ids, placed["Pronoun"], placed["A"], placed["B"],
                      windowed=len(window) < len(ids)), None


def setup_worker(export: TokenizerExport):
    return load_backend(export)


def convert_chunk(state, chunk: GapChunk) -> tuple[dict, dict]:
    """Turn a :class:`GapChunk` into feature columns (see ``GAP_SCHEMA``) and counts."""
    backend, special = state
    room = chunk.config.window_tokens(special)
    encodings = backend.encode_batch([ex.text for ex in chunk.examples], add_special_tokens=False)
    columns = {name: [] for name in GAP_SCHEMA.names[1:]}
    skipped, windowed = [], 0
    for example, encoding in zip(chunk.examples, encodings):
        feature, reason = build_feature(example, encoding.ids, encoding.offsets, special, room)
        if feature is None:
            skipped.append(skip(example.example_id, reason, where=f"line {example.line}"))
            continue
        windowed += feature.windowed
        values = {
            "example_id": example.example_id,
            "example_index": example.example_index,
            "input_ids": feature.input_ids,
            "segment_ids": feature.segment_ids,
            "p_start": feature.pronoun[0], "p_end": feature.pronoun[1],
            "a_start": feature.a[0], "a_end": feature.a[1],
            "b_start": feature.b[0], "b_end": feature.b[1],
            "label": example.label,
            "gender": example.gender,
        }
        for name, value in values.items():
            columns[name].append(value)
    stats = {"examples_converted": len(chunk.examples) - len(skipped), "windowed": windowed,
             "skipped": skipped}
    return (columns if columns["example_id"] else {}), stats


def split_name(input_path: str | Path) -> str:
    """``gap-development.tsv`` -> ``development``: the split recorded in the manifest and file names."""
    stem = Path(input_path).stem
    stem = stem[len("gap-"):] if stem.startswith("gap-") and len(stem) > 4 else stem
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem)


def prepare_gap(
    input_path: str | Path,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    config: GapPrepConfig = GapPrepConfig(),
    nproc: int = 1,
    mode: str = "shards",
    rows_per_chunk: int = 64,
    reserve_cpus: int = 1,
    progress=None,
    labelled: bool = True,
) -> dict:
    """Build GAP features from the TSV ``input_path`` into ``out_dir``; returns the manifest.

    Raises :class:`tasks.gap.read.GapFormatError` (naming file and line) on a malformed file;
    rows that are well formed but unusable are skipped and listed in the manifest.
    ``labelled=False``: rows without A-coref / B-coref (predictions; labels -1).
    """
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_model_dir()
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")

    def read(path: Path) -> ReadResult:
        result = read_gap(path, rows_per_chunk, labelled)
        result.chunks = [GapChunk(config, chunk) for chunk in result.chunks]
        return result

    return run_stage(
        dataset="gap", split=split_name(input_path), input_path=Path(input_path), out_dir=Path(out_dir),
        config=asdict(config), tokenizer_dir=tokenizer_dir, read=read, setup=setup_worker,
        convert=convert_chunk, schema=GAP_SCHEMA, nproc=nproc, mode=mode,
        reserve_cpus=reserve_cpus, progress=progress,
    )


def summarize(manifest: dict, out_dir: Path) -> str:
    """The one-paragraph report the CLI prints."""
    counts = manifest["counts"]
    reasons = "; ".join(f"{n} {reason}" for reason, n in sorted(manifest["skip_reasons"].items())) or "none"
    return (
        f"GAP {manifest['split']}: {counts['features_out']} features from "
        f"{counts['examples_converted']}/{counts['examples_in']} rows, {counts['examples_skipped']} skipped "
        f"({reasons}); {counts.get('windowed', 0)} texts windowed to "
        f"{manifest['config']['max_seq_length']} tokens; {manifest['seconds']:.1f}s on "
        f"{manifest['nproc']} process(es) ({manifest['mode']}) -> {out_dir}"
    )
