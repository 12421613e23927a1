"""RACE (folder tree or JSON Lines) -> one feature row per question with its four sequences, in Arrow.

    python -m prep.race ../shared/data/race/dev.jsonl runs/race-dev --nproc 2
    python -m prep.race RACE runs/race-test --split test --max-seq-length 384
    python -m prep.race RACE/train runs/race-train-4k --max-questions 4000

Each question becomes one row holding four sequences, one per option, each exactly what the
tokenizer's own pair encoding gives for ``tokenizer(passage, question+option,
truncation="only_first", max_length=max_seq_length)``: the passage is cut first, the
question+option never (a question whose question+option leaves no room for the passage is
skipped with that reason). The layout (special tokens, token types) comes from the tokenizer's
post-processor, not from hard-coded ids; ``token_type_ids`` is a column only when the tokenizer
returns them. Each passage is tokenized once and paired with each of its questions' options.

Per option the row also keeps the token spans of the passage and of the question+option
(``[start, end)`` in that sequence), which the DUMA head attends between. Columns:
docs/feature_schema.md (RACE).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import pyarrow as pa

from prep.stage import ReadResult, run_stage, skip
from prep.tokenizer import default_model_dir, load_backend, load_fast_tokenizer
from tasks.race.read import SPLITS, RaceArticle, input_digest, qa_text, read_chunks

NUM_CHOICES = 4
_SPAN_COLUMNS = ("passage_start", "passage_end", "qa_start", "qa_end")


def race_schema(token_types: bool) -> pa.Schema:
    fields = [
        ("feature_id", pa.int64()),
        ("example_id", pa.string()),  # the question id
        ("example_index", pa.int32()),
        ("article_id", pa.string()),
        ("level", pa.string()),
        ("input_ids", pa.list_(pa.list_(pa.int32()))),  # [4][tokens]
    ]
    if token_types:
        fields.append(("token_type_ids", pa.list_(pa.list_(pa.int8()))))
    fields += [(name, pa.list_(pa.int32())) for name in _SPAN_COLUMNS]  # [4]
    fields += [("label", pa.int8()), ("passage_truncated", pa.bool_())]
    return pa.schema(fields)


@dataclass(frozen=True)
class RacePrepConfig:
    max_seq_length: int = field(default=512, metadata={
        "help": "tokens per passage+question+option sequence, special tokens included; the passage is cut first"})
    split: str | None = field(default=None, metadata={
        "help": "with the release root folder RACE/ as input: which split folder to read", "choices": SPLITS})
    max_questions: int | None = field(default=None, metadata={
        "help": "keep the input's first N questions (a documented subset; default: all)"})
    every_nth: int = field(default=1, metadata={
        "help": "keep every Nth question of the input (a subset spread over both levels; 1: all)"})

    def __post_init__(self):
        if not isinstance(self.max_seq_length, int) or isinstance(self.max_seq_length, bool):
            raise TypeError(f"max_seq_length must be an int, got {self.max_seq_length!r}")
        if self.max_seq_length < 8:
            raise ValueError(f"max_seq_length must be >= 8, got {self.max_seq_length}")
        if self.split is not None and self.split not in SPLITS:
            raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")
        if self.max_questions is not None and (not isinstance(self.max_questions, int) or self.max_questions < 0):
            raise ValueError(f"max_questions must be a non-negative int (0: all), got {self.max_questions!r}")
        if not isinstance(self.every_nth, int) or self.every_nth < 1:
            raise ValueError(f"every_nth must be an int >= 1, got {self.every_nth!r}")

    @property
    def question_limit(self) -> int | None:
        return self.max_questions or None


class RaceChunk(NamedTuple):
    config: RacePrepConfig
    token_types: bool
    articles: list[RaceArticle]


class ChoiceSequence(NamedTuple):
    input_ids: list[int]
    type_ids: list[int]
    passage: tuple[int, int]  # [start, end) of the passage tokens
    qa: tuple[int, int]  # [start, end) of the question+option tokens
    passage_truncated: bool


def sequence_spans(sequence_ids: list, special_mask: list[int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """``[first, end)`` of the passage's and of the question+option's tokens in a pair encoding.

    The question+option tokens are those of sequence 1; the passage's, the other non-special ones
    (``post_process`` leaves the first sequence's ids unset when it was encoded on its own).
    """
    qa = [i for i, (s, special) in enumerate(zip(sequence_ids, special_mask)) if s == 1 and not special]
    passage = [i for i, (s, special) in enumerate(zip(sequence_ids, special_mask)) if s != 1 and not special]

    def span(positions):
        return (positions[0], positions[-1] + 1) if positions else (0, 0)

    return span(passage), span(qa)


def pair_sequence(backend, passage, qa, max_seq_length: int) -> ChoiceSequence:
    """The tokenizer's pair encoding of two already tokenized sequences, passage cut to fit (only_first).

    ``backend.post_process`` applies the tokenizer's truncation and post-processor (its special
    tokens and type ids) to copies of the encodings, as ``tokenizer(passage, qa, ...)`` would.
    """
    pair = backend.post_process(passage, qa, add_special_tokens=True)
    passage_span, qa_span = sequence_spans(pair.sequence_ids, pair.special_tokens_mask)
    return ChoiceSequence(pair.ids, pair.type_ids, passage_span, qa_span,
                          passage_truncated=passage_span[1] - passage_span[0] < len(passage.ids))


def setup_worker(export):
    backend, _ = load_backend(export)
    return backend, backend.num_special_tokens_to_add(True)


def convert_chunk(state, chunk: RaceChunk) -> tuple[dict, dict]:
    """A :class:`RaceChunk` of articles -> one row per question (see :func:`race_schema`) and counts."""
    backend, specials = state
    limit = chunk.config.max_seq_length
    schema = race_schema(chunk.token_types)
    columns = {name: [] for name in schema.names[1:]}
    skipped, truncated, converted = [], 0, 0
    backend.no_truncation()
    passages = backend.encode_batch([article.article for article in chunk.articles], add_special_tokens=False)
    qas = [[qa_text(q.question, option) for option in q.options] for a in chunk.articles for q in a.questions]
    qa_encodings = iter(backend.encode_batch([text for four in qas for text in four], add_special_tokens=False))
    backend.enable_truncation(limit, strategy="only_first")
    for article, passage in zip(chunk.articles, passages):
        for question in article.questions:
            encodings = [next(qa_encodings) for _ in range(NUM_CHOICES)]
            longest = max(len(e.ids) for e in encodings)
            if specials + longest >= limit:
                skipped.append(skip(question.question_id, f"question+option takes {longest} tokens: no room for "
                                    f"the passage in {limit}", where=article.where))
                continue
            choices = [pair_sequence(backend, passage, qa, limit) for qa in encodings]
            converted += 1
            truncated += any(c.passage_truncated for c in choices)
            values = {
                "example_id": question.question_id, "example_index": question.example_index,
                "article_id": article.article_id, "level": question.level,
                "input_ids": [c.input_ids for c in choices],
                "passage_start": [c.passage[0] for c in choices], "passage_end": [c.passage[1] for c in choices],
                "qa_start": [c.qa[0] for c in choices], "qa_end": [c.qa[1] for c in choices],
                "label": question.label, "passage_truncated": any(c.passage_truncated for c in choices),
            }
            if chunk.token_types:
                values["token_type_ids"] = [c.type_ids for c in choices]
            for name, value in values.items():
                columns[name].append(value)
    stats = {"examples_converted": converted, "passages_truncated": truncated, "skipped": skipped}
    return (columns if columns["example_id"] else {}), stats


def tokenizer_gives_types(tokenizer_dir: Path) -> bool:
    return "token_type_ids" in load_fast_tokenizer(tokenizer_dir).model_input_names


def split_name(input_path: Path, config: RacePrepConfig) -> str:
    """``dev.jsonl`` -> ``dev``; ``RACE`` with split test -> ``test``; ``RACE/dev`` -> ``dev``."""
    input_path = Path(input_path)
    return config.split or (input_path.name if input_path.is_dir() else input_path.stem)


def prepare_race(
    input_path: str | Path,
    out_dir: str | Path,
    tokenizer_dir: str | Path | None = None,
    config: RacePrepConfig = RacePrepConfig(),
    nproc: int = 1,
    mode: str = "shards",
    articles_per_chunk: int = 16,
    reserve_cpus: int = 1,
    progress=None,
    labelled: bool = True,
) -> dict:
    """Build RACE features from ``input_path`` (JSON Lines file or release folder) into ``out_dir``.

    Raises :class:`tasks.race.read.RaceFormatError` on input that is not RACE; unusable
    questions are skipped and listed in the manifest. ``labelled=False``: questions without
    answers (predictions; labels -1).
    """
    tokenizer_dir = Path(tokenizer_dir) if tokenizer_dir else default_model_dir()
    input_path = Path(input_path)
    if not input_path.exists():
        raise FileNotFoundError(f"input not found: {input_path}")
    digest = input_digest(input_path, config.split)  # also checks a folder's layout before the pool starts
    token_types = tokenizer_gives_types(tokenizer_dir)

    def read(path: Path) -> ReadResult:
        result = read_chunks(path, articles_per_chunk, config.split, config.question_limit, config.every_nth,
                             labelled)
        result.chunks = [RaceChunk(config, token_types, chunk) for chunk in result.chunks]
        return result

    return run_stage(
        dataset="race", split=split_name(input_path, config), input_path=input_path, out_dir=Path(out_dir),
        config=asdict(config), tokenizer_dir=tokenizer_dir, read=read, setup=setup_worker,
        convert=convert_chunk, schema=race_schema(token_types), nproc=nproc, mode=mode,
        reserve_cpus=reserve_cpus, progress=progress, input_sha256=digest,
    )


def summarize(manifest: dict, out_dir: Path) -> str:
    counts = manifest["counts"]
    reasons = "; ".join(f"{n} {reason}" for reason, n in sorted(manifest["skip_reasons"].items())) or "none"
    return (
        f"RACE {manifest['split']}: {counts['features_out']} question rows (4 sequences each) from "
        f"{counts['examples_converted']}/{counts['examples_in']} questions, {counts['examples_skipped']} skipped "
        f"({reasons}); {counts.get('passages_truncated', 0)} passages cut to fit "
        f"{manifest['config']['max_seq_length']} tokens; {manifest['seconds']:.1f}s on "
        f"{manifest['nproc']} process(es) ({manifest['mode']}) -> {out_dir}"
    )
