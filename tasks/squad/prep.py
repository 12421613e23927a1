"""SQuAD v1.1 / v2.0 -> windowed encoder features in Arrow, on a multiprocessing pool.

    python -m prep.squad train-v1.1.json runs/squad-train --nproc 4 --mode shards
    python -m prep.squad dev-v1.1.json runs/squad-dev --split eval --tokenizer path/to/bert-base-uncased

Windowing follows Hugging Face's run_qa (the fast tokenizers' ``stride``): a context longer than
the room left after ``[CLS] question [SEP] ... [SEP]`` is cut into windows of that room,
``room = max_seq_length - len(question_tokens) - 3``; consecutive windows **overlap** by
``doc_stride`` tokens, so window starts advance by ``room - doc_stride``. Google's / NVIDIA's
run_squad use ``doc_stride`` for that advance instead (step between window starts): HF
``doc_stride=128`` at ``max_seq_length=384`` and a 10-token question equals a Google
``doc_stride`` of 371 - 128 = 243; Google's default step of 128 equals an HF overlap of
``room - 128`` (243 for that question).

The special tokens are the tokenizer's own (:class:`prep.tokenizer.SpecialTokens`): BERT's
``[CLS] q [SEP] c [SEP]`` with token types 0 / 1, or RoBERTa's and MPNet's ``<s> q </s></s> c </s>``
(4 special tokens, so ``room`` is one less) with all-zero types, as the tokenizer's own pair
encoding and run_qa give.

What makes it fast: each context is tokenized once, with character offsets, and reused for all
of its questions (SQuAD has ~5 per context), instead of re-tokenizing question + context per
question; windows are then cut from the token arrays.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from tasks.squad.read import read_squad
from prep.stage import ReadResult, run_stage, skip
from prep.tokenizer import default_model_dir, load_backend

SPLITS = ("train", "eval")
_SPECIAL_TOKENS = 3  # [CLS] question [SEP] context [SEP]: the fewest a pair layout has (config checks)

TRAIN_SCHEMA = pa.schema([
    ("feature_id", pa.int64()),
    ("example_id", pa.string()),
    ("example_index", pa.int32()),
    ("input_ids", pa.list_(pa.int32())),
    ("token_type_ids", pa.list_(pa.int8())),
    ("start_positions", pa.int32()),
    ("end_positions", pa.int32()),
])
EVAL_SCHEMA = TRAIN_SCHEMA.append(pa.field("offset_mapping", pa.list_(pa.list_(pa.int32(), 2))))


@dataclass(frozen=True)
class SquadPrepConfig:
    max_seq_length: int = field(default=384, metadata={"help": "tokens per window, special tokens included"})
    doc_stride: int = field(default=128, metadata={"help": "overlap in tokens between a context's windows"})
    max_query_length: int = field(default=64, metadata={"help": "questions are cut to this many tokens"})
    split: str = field(default="train", metadata={
        "help": "train: labelled windows; eval: windows with the offset mapping answers are decoded with",
        "choices": SPLITS})
    max_articles: int | None = field(default=None, metadata={"help": "use only the first N articles (a quick subset)"})

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {self.split!r}")
        if self.max_articles is not None and self.max_articles < 1:
            raise ValueError(f"max_articles must be >= 1 or None, got {self.max_articles}")
        if min(self.max_seq_length, self.max_query_length) < 1 or self.doc_stride < 0:
            raise ValueError(f"lengths must be positive and doc_stride >= 0: {self}")
        if self.min_context_room <= self.doc_stride:
            raise ValueError(
                f"max_seq_length ({self.max_seq_length}) - max_query_length ({self.max_query_length}) - 3 "
                f"must exceed doc_stride ({self.doc_stride}): windows would not advance"
            )

    @property
    def min_context_room(self) -> int:
        """Context tokens per window when the question uses its whole ``max_query_length``."""
        return self.max_seq_length - self.max_query_length - _SPECIAL_TOKENS

    @property
    def schema(self) -> pa.Schema:
        return EVAL_SCHEMA if self.split == "eval" else TRAIN_SCHEMA


def window_spans(num_tokens: int, room: int, doc_stride: int) -> list[tuple[int, int]]:
    """[start, stop) context-token windows of at most ``room`` tokens overlapping by ``doc_stride``.

    Same cut as ``tokenizers``' overflow with ``stride`` (Encoding.truncate, direction right).
    """
    if num_tokens <= room:
        return [(0, num_tokens)]
    step = room - doc_stride
    if step < 1:
        raise ValueError(f"windows of {room} tokens overlapping by doc_stride {doc_stride} would not advance")
    spans, start = [], 0
    while True:
        stop = min(start + room, num_tokens)
        spans.append((start, stop))
        if stop == num_tokens:
            return spans
        start += step


def label_span(starts: np.ndarray, ends: np.ndarray, span: tuple[int, int], start_char: int, end_char: int):
    """Context-token (start, end) of the answer inside ``span``, or None if the window lacks it.

    Same rule as run_qa's labelling, except that an answer in the window's last token maps to
    that token (run_qa walks past the window onto [SEP]/padding there).
    """
    s, e = span
    if not (starts[s] <= start_char and ends[e - 1] >= end_char):
        return None
    first = int(np.searchsorted(starts[s:e], start_char, side="right")) - 1 + s
    last = int(np.searchsorted(ends[s:e], end_char, side="left")) + s
    return first, last


def setup_worker(export):
    return load_backend(export)


def convert_chunk(state, payload) -> tuple[dict, dict]:
    """Turn ``(config, [(context, questions), ...])`` into feature columns (see the schema)."""
    backend, special = state
    config, contexts = payload
    is_eval = config.split == "eval"
    if config.max_seq_length - config.max_query_length - special.pair_specials <= config.doc_stride:
        raise ValueError(
            f"max_seq_length ({config.max_seq_length}) - max_query_length ({config.max_query_length}) - "
            f"{special.pair_specials} special tokens of this tokenizer must exceed doc_stride ({config.doc_stride})"
        )
    context_encodings = backend.encode_batch([c for c, _ in contexts], add_special_tokens=False)
    flat_questions = [q for _, qs in contexts for q in qs]
    question_encodings = backend.encode_batch([q[2].lstrip() for q in flat_questions], add_special_tokens=False)

    prefix, middle = np.array(special.pair_prefix, np.int32), np.array(special.pair_middle, np.int32)
    suffix = np.array(special.pair_suffix, np.int32)
    id_parts, head_lengths, tail_lengths = [], [], []
    offset_parts, example_ids, example_indices, start_positions, end_positions = [], [], [], [], []
    skipped = []
    stats = dict(contexts=len(contexts), questions=len(flat_questions), truncated_questions=0,
                 multi_window_questions=0, features_without_answer=0)
    q_iter = iter(zip(flat_questions, question_encodings))
    for (context, questions), c_enc in zip(contexts, context_encodings):
        c_ids = np.asarray(c_enc.ids, dtype=np.int32)
        offsets = np.asarray(c_enc.offsets, dtype=np.int32).reshape(-1, 2)
        starts, ends = offsets[:, 0], offsets[:, 1]
        for _ in questions:
            (index, qid, _question, start_char, answer_text, _impossible), q_enc = next(q_iter)
            if len(c_ids) == 0:
                skipped.append(skip(qid, "context has no tokens", f"example {index}"))
                continue
            q_ids = q_enc.ids
            if not q_ids:
                skipped.append(skip(qid, "question has no tokens", f"example {index}"))
                continue
            if len(q_ids) > config.max_query_length:
                q_ids = q_ids[: config.max_query_length]
                stats["truncated_questions"] += 1
            head = np.concatenate([prefix, np.asarray(q_ids, np.int32), middle])
            spans = window_spans(len(c_ids), config.max_seq_length - len(q_ids) - special.pair_specials,
                                 config.doc_stride)
            stats["multi_window_questions"] += len(spans) > 1
            for span in spans:
                s, e = span
                id_parts += (head, c_ids[s:e], suffix)
                head_lengths.append(len(head))
                tail_lengths.append(e - s + len(suffix))
                example_ids.append(qid)
                example_indices.append(index)
                found = None
                if start_char is not None:
                    found = label_span(starts, ends, span, start_char, start_char + len(answer_text))
                if found is None:
                    start_positions.append(0)
                    end_positions.append(0)
                    stats["features_without_answer"] += 1
                else:
                    start_positions.append(len(head) + found[0] - s)
                    end_positions.append(len(head) + found[1] - s)
                if is_eval:
                    offset_parts.append((len(head), offsets[s:e]))
    stats["examples_converted"] = len(flat_questions) - len(skipped)
    stats["skipped"] = skipped
    if not example_ids:
        return {}, stats

    lengths = np.add(head_lengths, tail_lengths)
    row_offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    ids = np.concatenate(id_parts)
    types = np.repeat(np.tile(np.array([special.first_type, special.second_type], np.int8), len(lengths)),
                      np.stack([head_lengths, tail_lengths], axis=1).ravel())
    columns = {
        "example_id": example_ids,
        "example_index": np.asarray(example_indices, np.int32),
        "input_ids": pa.ListArray.from_arrays(pa.array(row_offsets), pa.array(ids)),
        "token_type_ids": pa.ListArray.from_arrays(pa.array(row_offsets), pa.array(types)),
        "start_positions": np.asarray(start_positions, np.int32),
        "end_positions": np.asarray(end_positions, np.int32),
    }
    if is_eval:
        columns["offset_mapping"] = _offset_mapping(offset_parts, row_offsets)
    return columns, stats


def _offset_mapping(parts, row_offsets) -> pa.Array:
    """Per-token (start, end) char offsets, null outside the context window."""
    total = int(row_offsets[-1])
    values = np.zeros((total, 2), np.int32)
    valid = np.zeros(total, bool)
    for (head_len, window_offsets), row_start in zip(parts, row_offsets[:-1]):
        first = row_start + head_len
        values[first : first + len(window_offsets)] = window_offsets
        valid[first : first + len(window_offsets)] = True
    pairs = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), 2, mask=pa.array(~valid))
    return pa.ListArray.from_arrays(pa.array(row_offsets), pairs)


def prepare_squad(
    input_path: str | Path,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    config: SquadPrepConfig = SquadPrepConfig(),
    nproc: int = 1,
    mode: str = "shards",
    contexts_per_chunk: int = 32,
    reserve_cpus: int = 1,
    progress=None,
    labelled: bool = True,
) -> dict:
    """Build SQuAD features from ``input_path`` into ``out_dir``; returns the manifest.

    ``labelled=False``: questions without answers (predictions), on the eval split only.
    """
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_model_dir()
    if contexts_per_chunk < 1:
        raise ValueError(f"contexts_per_chunk must be >= 1, got {contexts_per_chunk}")
    if not labelled and config.split != "eval":
        raise ValueError("questions without answers are read for the eval split only (it keeps the offsets)")

    def read(path: Path) -> ReadResult:
        result = read_squad(path, config.split, contexts_per_chunk, config.max_articles, labelled)
        result.chunks = [(config, chunk) for chunk in result.chunks]
        return result

    return run_stage(
        dataset="squad", split=config.split, input_path=Path(input_path), out_dir=Path(out_dir),
        config=asdict(config), tokenizer_dir=tokenizer_dir, read=read, setup=setup_worker,
        convert=convert_chunk, schema=config.schema, nproc=nproc, mode=mode,
        reserve_cpus=reserve_cpus, progress=progress,
    )


def summarize(manifest: dict, out_dir: Path) -> str:
    """The one-line report the CLI prints."""
    counts = manifest["counts"]
    return (f"{counts['features_out']} features from {counts['examples_converted']}/{counts['examples_in']} "
            f"questions ({counts['examples_skipped']} skipped: {manifest['skip_reasons'] or 'none'}) "
            f"in {manifest['seconds']:.1f}s on {manifest['nproc']} processes ({manifest['mode']}) -> {out_dir}")
