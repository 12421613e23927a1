"""The SQuAD v1.1 / v2.0 JSON reader that prep and evaluation share.

:func:`load_json` and the field checks are common: structural problems (not UTF-8, malformed
JSON, a missing field, a wrong type) raise :class:`SquadFormatError` naming the file and where.
Prep reads chunks of contexts with their questions (:func:`read_squad`; content problems such as
an empty context, an ``answer_start`` that does not point at its text or a duplicate id skip that
question with the reason recorded). Evaluation indexes every question of the file
(:func:`load_squad_data`), where a duplicate id is an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from prep.stage import ReadResult, skip


class SquadFormatError(ValueError):
    pass


def load_json(path: Path):
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise SquadFormatError(f"{path}: line {line} (byte {err.start}): not UTF-8 ({err.reason})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SquadFormatError(
            f"{path}: line {err.lineno} column {err.colno}: malformed JSON ({err.msg}); truncated file?") from None


def _field(obj, name: str, kind, path: Path, where: str):
    if not isinstance(obj, dict):
        raise SquadFormatError(f"{path}: {where}: expected an object, got {type(obj).__name__}")
    if name not in obj:
        raise SquadFormatError(f"{path}: {where}: missing field '{name}'")
    value = obj[name]
    if not isinstance(value, kind):
        raise SquadFormatError(f"{path}: {where}.{name}: expected {kind.__name__}, got {type(value).__name__}")
    return value


def read_squad(path: Path, split: str, contexts_per_chunk: int, max_articles: int | None = None,
               labelled: bool = True) -> ReadResult:
    """Parse and validate a SQuAD file into chunks for :func:`tasks.squad.prep.convert_chunk`.

    A chunk is a list of ``(context, questions)``; a question is the tuple
    ``(example_index, id, question, answer_start, answer_text, is_impossible)`` where the answer
    is the one the features are labelled with (the first answer; for the eval split the first
    whose offset matches, or None, labelled [CLS]). ``max_articles`` keeps the first N articles.
    ``labelled=False`` (predictions on new questions): ``answers`` and ``is_impossible`` are
    neither needed nor read, and every question is unlabelled.
    """
    payload = load_json(path)
    articles = _field(payload, "data", list, path, "top level")
    articles_in_file = len(articles)
    articles = articles[:max_articles] if max_articles else articles
    chunks, chunk, skipped, seen = [], [], [], set()
    examples_in = unlabelled = impossible = 0
    has_impossible_field = False
    for i, article in enumerate(articles):
        for j, paragraph in enumerate(_field(article, "paragraphs", list, path, f"data[{i}]")):
            where_p = f"data[{i}].paragraphs[{j}]"
            context = _field(paragraph, "context", str, path, where_p)
            questions = []
            for k, qa in enumerate(_field(paragraph, "qas", list, path, where_p)):
                where = f"{where_p}.qas[{k}]"
                qid = _field(qa, "id", str, path, where)
                question = _field(qa, "question", str, path, where)
                answers = _field(qa, "answers", list, path, where) if labelled else []
                is_impossible = labelled and bool(qa.get("is_impossible", False))
                has_impossible_field |= labelled and "is_impossible" in qa
                index = examples_in
                examples_in += 1
                if qid in seen:
                    skipped.append(skip(qid, "duplicate question id", where))
                    continue
                seen.add(qid)
                if not context.strip():
                    skipped.append(skip(qid, "empty context", where))
                    continue
                if not question.strip():
                    skipped.append(skip(qid, "empty question", where))
                    continue
                label = None
                if is_impossible:
                    impossible += 1
                elif not labelled:
                    unlabelled += 1
                else:
                    spans = []
                    for a, answer in enumerate(answers):
                        text = _field(answer, "text", str, path, f"{where}.answers[{a}]")
                        start = _field(answer, "answer_start", int, path, f"{where}.answers[{a}]")
                        spans.append((start, text))
                    valid = [(s, t) for s, t in spans if t.strip() and context[s : s + len(t)] == t and s >= 0]
                    if split == "train":
                        if not spans:
                            skipped.append(skip(qid, "no answer for an answerable question", where))
                            continue
                        if not spans[0][1].strip():
                            skipped.append(skip(qid, "empty answer text", where))
                            continue
                        if spans[0] not in valid:
                            skipped.append(skip(qid, "answer_start does not point at the answer text", where))
                            continue
                        label = spans[0]
                    elif valid:
                        label = valid[0]
                    else:
                        # Eval keeps the question (it is scored on the answer texts); no span label.
                        unlabelled += 1
                start, text = label if label else (None, None)
                questions.append((index, qid, question, start, text, is_impossible))
            if questions:
                chunk.append((context, questions))
                if len(chunk) >= contexts_per_chunk:
                    chunks.append(chunk)
                    chunk = []
    if chunk:
        chunks.append(chunk)
    version = payload.get("version") if isinstance(payload, dict) else None
    info = {
        "squad_version": version,
        "articles_in_file": articles_in_file,
        "articles_used": len(articles),
        "subset": {"unit": "articles", "used": len(articles), "of": articles_in_file},
        "version_2_with_negative": has_impossible_field or (str(version).startswith("v2")),
        "impossible_questions": impossible,
        "eval_questions_without_span_label": unlabelled,
        "labelled": labelled,
    }
    return ReadResult(chunks=chunks, examples_in=examples_in, skipped=skipped, info=info)


@dataclass(frozen=True)
class SquadData:
    """A SQuAD file as evaluation needs it: the official scripts' ``data`` list and a question index."""

    dataset: list  # the file's "data" list, as the official scripts take it
    version: str | None
    has_impossible: bool  # any question marked is_impossible (SQuAD 2.0)
    contexts: dict  # question id -> context
    questions: dict  # question id -> question text

    @property
    def question_ids(self) -> list[str]:
        return list(self.contexts)


def index_squad(payload, path: Path, max_articles: int | None = None, labelled: bool = True) -> SquadData:
    """Check a parsed SQuAD document and index the questions of its first ``max_articles`` articles
    (``labelled=False``: questions without ``answers``, whose answers and ``is_impossible`` are not read)."""
    articles = _field(payload, "data", list, path, "top level")[:max_articles]
    contexts, questions = {}, {}
    has_impossible = False
    for i, article in enumerate(articles):
        for j, paragraph in enumerate(_field(article, "paragraphs", list, path, f"data[{i}]")):
            where_p = f"data[{i}].paragraphs[{j}]"
            context = _field(paragraph, "context", str, path, where_p)
            for k, qa in enumerate(_field(paragraph, "qas", list, path, where_p)):
                where = f"{where_p}.qas[{k}]"
                qid = _field(qa, "id", str, path, where)
                if qid in contexts:
                    raise SquadFormatError(f"{path}: {where}: duplicate question id {qid!r}")
                questions[qid] = _field(qa, "question", str, path, where)
                if labelled:
                    for a, answer in enumerate(_field(qa, "answers", list, path, where)):
                        _field(answer, "text", str, path, f"{where}.answers[{a}]")
                    has_impossible |= bool(qa.get("is_impossible", False))
                contexts[qid] = context
    if not contexts:
        raise SquadFormatError(f"{path}: no questions")
    version = payload.get("version")
    return SquadData(articles, str(version) if version is not None else None, has_impossible, contexts, questions)


def load_squad_data(path: str | Path, max_articles: int | None = None, labelled: bool = True) -> SquadData:
    """Read and index a SQuAD file for evaluation (the first ``max_articles`` articles), or, with
    ``labelled=False``, a file of new questions for predictions."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD data file not found: {path}")
    return index_squad(load_json(path), path, max_articles, labelled)

