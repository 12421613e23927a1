"""Reading RACE: the release folder tree or a JSON Lines file, into questions with a reason for each one left out.

RACE (Lai et al., 2017) ships one JSON object per article file, ``RACE/<split>/<level>/<n>.txt``,
with ``article``, ``questions``, ``options`` (four per question), ``answers`` (a letter per
question) and ``id`` (``high1011.txt``). Both layouts read the same:

- a JSON Lines file, one such object per line (``../shared/data/race/dev.jsonl``); the level is
  the ``middle`` / ``high`` prefix of ``id``;
- a folder: a split folder (``RACE/dev``, holding ``middle/`` and ``high/``), or the release
  root ``RACE`` together with ``split`` (``train``, ``dev`` or ``test``). Files are read
  ``middle`` first, then ``high``, by number, which is the JSON Lines order, and
  :func:`input_digest` of a folder equals the sha256 of the JSON Lines file made from it (each
  file's bytes plus ``\\n``), so features and evaluations treat the two as the same input.

Questions without answers (a record without ``answers``: predictions on new data) are read with
``labelled=False``: every question's label is :data:`LABEL_NONE` and ``gold`` lists them all.

Two kinds of bad input are told apart: a file that is not RACE (invalid JSON, a missing field,
``questions`` / ``options`` / ``answers`` of different lengths) raises :class:`RaceFormatError`
naming the file and line; a well-formed question that cannot be used (not four options, an
answer not in A-D, a repeated id) is skipped with its reason, so the manifest accounts for it.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Iterator, NamedTuple

from prep.stage import ReadResult, skip

LETTERS = ("A", "B", "C", "D")
LEVELS = ("middle", "high")
SPLITS = ("train", "dev", "test")
REQUIRED_FIELDS = ("article", "questions", "options", "answers")
LABEL_NONE = -1  # a question without an answer (predictions on new data)
_NUMBERED = re.compile(r"([0-9]+)\.txt")


class RaceFormatError(ValueError):
    """The input is not readable RACE; the message names the file (and line)."""


class RaceQuestion(NamedTuple):
    """One usable question: four options and the answer's index (0-3)."""

    question_id: str  # <article id without .txt>-<question index>, e.g. high1011-0
    example_index: int  # position among all the input's questions (0-based)
    question: str
    options: tuple[str, str, str, str]
    label: int
    level: str


class RaceArticle(NamedTuple):
    """An article and its usable questions: what one pool task converts (the passage is tokenized once)."""

    article_id: str
    where: str  # file and line, for skip reports
    article: str
    questions: tuple[RaceQuestion, ...]


class GoldQuestion(NamedTuple):
    """A question that can be scored (its answer is one of A-D), usable or not."""

    question_id: str
    label: int
    level: str


class RaceData(NamedTuple):
    articles: list[RaceArticle]
    gold: list[GoldQuestion]
    questions_in: int
    skipped: list[dict]
    info: dict


def question_id(article_id: str, index: int) -> str:
    return f"{article_id.removesuffix('.txt')}-{index}"


def qa_text(question: str, option: str) -> str:
    """Question and option as one sequence: a cloze question's blank ``_`` is filled with the option,
    otherwise the option follows the question (the usual RACE input, e.g. Hugging Face's RaceProcessor)."""
    if "_" in question:
        return question.replace("_", option)
    return f"{question} {option}".strip()


def _records_from_jsonl(path: Path) -> Iterator[tuple[str, dict, str | None]]:
    data = path.read_bytes()
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{path}: line {line_no}"
        yield where, _parse_json(raw, where), None


def _parse_json(raw: bytes, where: str) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise RaceFormatError(f"{where}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise RaceFormatError(f"{where}: invalid JSON: {err.msg} at column {err.colno}") from None
    if not isinstance(record, dict):
        raise RaceFormatError(f"{where}: expected a JSON object, got {type(record).__name__}")
    return record


def split_files(folder: Path, split: str | None = None) -> list[tuple[str, Path]]:
    """``(level, file)`` of a RACE folder in the JSON Lines order: ``middle`` then ``high``, by number.

    ``folder`` is a split folder (``RACE/dev``) or the release root with ``split``.
    """
    folder = Path(folder)
    if any((folder / name).is_dir() for name in SPLITS):
        if split is None:
            raise RaceFormatError(f"{folder}: the release root holds {', '.join(s for s in SPLITS if (folder / s).is_dir())}; "
                                  "say which with --split, or give the split folder")
        if split not in SPLITS:
            raise RaceFormatError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
        folder = folder / split
        if not folder.is_dir():
            raise RaceFormatError(f"{folder}: no such split folder")
    levels = [level for level in LEVELS if (folder / level).is_dir()]
    if not levels:
        raise RaceFormatError(f"{folder}: not a RACE folder (expected middle/ and high/, or train/ dev/ test/)")
    files = []
    for level in levels:
        named = []
        for path in (folder / level).iterdir():
            if path.suffix != ".txt" or not path.is_file():
                continue
            match = _NUMBERED.fullmatch(path.name)
            named.append(((0, int(match.group(1))) if match else (1, path.name), path))
        files += [(level, path) for _, path in sorted(named)]
    if not files:
        raise RaceFormatError(f"{folder}: no .txt article files under {' or '.join(levels)}/")
    return files


def _records_from_folder(folder: Path, split: str | None) -> Iterator[tuple[str, dict, str]]:
    for level, path in split_files(folder, split):
        yield str(path), _parse_json(path.read_bytes().rstrip(b"\r\n"), str(path)), level


def input_digest(path: str | Path, split: str | None = None) -> str:
    """sha256 of the input as JSON Lines: the file's own bytes, or a folder's files each followed by ``\\n``."""
    path = Path(path)
    digest = hashlib.sha256()
    if path.is_dir():
        for _, file in split_files(path, split):
            digest.update(file.read_bytes().rstrip(b"\r\n") + b"\n")
        return digest.hexdigest()
    if not path.is_file():
        raise FileNotFoundError(f"input not found: {path}")
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _level_of(article_id: str, folder_level: str | None) -> str:
    if folder_level is not None:
        return folder_level
    for level in LEVELS:
        if article_id.startswith(level):
            return level
    return "unknown"


def _check_record(record: dict, where: str, labelled: bool = True) -> None:
    required = REQUIRED_FIELDS if labelled else REQUIRED_FIELDS[:-1]
    missing = [name for name in required if name not in record]
    if missing:
        raise RaceFormatError(f"{where}: missing field(s) {', '.join(missing)}; a RACE article has "
                              f"{', '.join(required)} and id")
    if not isinstance(record["article"], str):
        raise RaceFormatError(f"{where}: article is not a string")
    for name in required[1:]:
        if not isinstance(record[name], list):
            raise RaceFormatError(f"{where}: {name} is not a list")
    lengths = {name: len(record[name]) for name in required[1:]}
    if len(set(lengths.values())) != 1:
        raise RaceFormatError(f"{where}: questions, options and answers differ in length "
                              f"({', '.join(f'{k} {v}' for k, v in lengths.items())})")


def read_race(path: str | Path, split: str | None = None, max_questions: int | None = None,
              every_nth: int = 1, labelled: bool = True) -> RaceData:
    """Read a RACE JSON Lines file or folder: every ``every_nth`` question (1: all; a subset spread
    over the file, so over both levels), at most ``max_questions`` of them (None: no limit).

    Raises :class:`RaceFormatError` on input that is not RACE; questions that are well formed but
    unusable are listed in ``skipped`` (``gold`` still holds those whose answer is a letter A-D).
    ``labelled=False``: ``answers`` are neither needed nor read; every question is in ``gold``
    with the label :data:`LABEL_NONE`.
    """
    path = Path(path)
    if max_questions is not None and max_questions < 1:
        raise ValueError(f"max_questions must be >= 1 or None, got {max_questions}")
    if every_nth < 1:
        raise ValueError(f"every_nth must be >= 1, got {every_nth}")
    if path.is_dir():
        records = _records_from_folder(path, split)
        layout = "folder"
    elif path.is_file():
        records = _records_from_jsonl(path)
        layout = "jsonl"
    else:
        raise FileNotFoundError(f"input not found: {path}")
    articles, gold, skipped = [], [], []
    seen: set[str] = set()
    index = 0  # questions kept
    position = 0  # questions met
    article_count = 0
    for where, record, folder_level in records:
        if max_questions is not None and index >= max_questions:
            break
        _check_record(record, where, labelled)
        article_id = str(record.get("id") or (f"{folder_level}{Path(where).name}" if folder_level else f"article{article_count}"))
        level = _level_of(article_id, folder_level)
        article_count += 1
        usable = []
        answers = record["answers"] if labelled else [None] * len(record["questions"])
        for k, (question, options, answer) in enumerate(zip(record["questions"], record["options"], answers)):
            if max_questions is not None and index >= max_questions:
                break
            position += 1
            if (position - 1) % every_nth:
                continue
            qid = question_id(article_id, k)
            example_index, index = index, index + 1
            here = f"{where}: question {k}"
            if qid in seen:
                skipped.append(skip(qid, "duplicate question id", where=here))
                continue
            seen.add(qid)
            label = LETTERS.index(answer) if answer in LETTERS else None if labelled else LABEL_NONE
            if label is not None:
                gold.append(GoldQuestion(qid, label, level))
            reason = None
            if not isinstance(options, list) or len(options) != 4:
                reason = f"{len(options) if isinstance(options, list) else 'no'} options, not 4"
            elif label is None:
                reason = "answer not one of A-D"
            elif not isinstance(question, str) or not all(isinstance(o, str) for o in options):
                reason = "question or option is not text"
            elif not record["article"].strip():
                reason = "empty article"
            if reason is not None:
                skipped.append(skip(qid, reason, where=here))
                continue
            usable.append(RaceQuestion(qid, example_index, question, tuple(options), label, level))
        if usable:
            articles.append(RaceArticle(article_id, where, record["article"], tuple(usable)))
    info = {"format": f"race-{layout}", "articles": article_count, "max_questions": max_questions,
            "every_nth": every_nth, "labelled": labelled}
    if layout == "folder" and split is not None:
        info["split_folder"] = split
    return RaceData(articles, gold, index, skipped, info)


def read_chunks(path: str | Path, articles_per_chunk: int, split: str | None = None,
                max_questions: int | None = None, every_nth: int = 1, labelled: bool = True) -> ReadResult:
    """:func:`read_race` as prep's :class:`prep.stage.ReadResult`: chunks of articles, counted in questions."""
    if articles_per_chunk < 1:
        raise ValueError(f"articles_per_chunk must be >= 1, got {articles_per_chunk}")
    data = read_race(path, split, max_questions, every_nth, labelled)
    chunks = [data.articles[i:i + articles_per_chunk] for i in range(0, len(data.articles), articles_per_chunk)]
    return ReadResult(chunks=chunks, examples_in=data.questions_in, skipped=data.skipped, info=data.info)
