"""Reading an official GLUE TSV file into text examples, every row accounted for.

    examples, skipped, info = read_glue("glue_data/RTE/dev.tsv", "rte")

The files are tab-separated with no quoting (``csv.QUOTE_NONE``, as GLUE's own readers and
Hugging Face's run_glue read them: SST-2 and CoLA sentences hold bare ``"`` characters). A file
that cannot be read at all (not UTF-8, no header where one is expected, a header without the
task's columns, no data rows) raises :class:`GlueFormatError`. A row that is broken (another
number of fields than the header, an empty sentence, a label outside the task's label set, a
score that is not a number) is returned in ``skipped`` with its line and reason: prep lists it
in its manifest, and evaluation refuses a dev file with any (see tasks/glue/evaluate.py), so a
score never rests on a silently smaller denominator.

An example's id is its row's 0-based position among the file's data rows (Hugging Face's
``idx``), so ids are stable whatever is skipped. A test file (:func:`read_glue_test`: an index
column and the sentences, no label) names its examples by its index column, the key of the GLUE
server's submission file.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from prep.stage import skip
from tasks.glue.benchmark import TASKS, GlueTask
from tasks.textclass.read import TextExample


class GlueFormatError(ValueError):
    """The file cannot be read as the GLUE task's TSV; the message names the file and line."""


def _decode(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")  # MRPC's files start with a BOM, as download_glue_data.py writes them
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise GlueFormatError(f"{path}: line {line}: byte 0x{data[err.start]:02x} is not UTF-8") from None


def _position(path: Path, header: list[str] | None, column: str | int, task: GlueTask) -> int:
    if isinstance(column, int):
        return column
    if header is None or column not in header:
        raise GlueFormatError(f"{path}: line 1: no column {column!r} for GLUE task {task.name} "
                              f"(the header has: {', '.join(map(repr, header or []))}); is this {task.folder}'s file?")
    return header.index(column)


def _label(task: GlueTask, raw: str) -> tuple[str | float | None, str | None]:
    """``(label, None)``, or ``(None, reason)`` for a label the task cannot score."""
    raw = raw.strip()
    if task.regression:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        return (value, None) if math.isfinite(value) else (None, f"score {raw!r} is not a number")
    if raw not in task.labels:
        return None, f"label {raw!r} not in {list(task.labels)}"
    return raw, None


def read_glue(path: str | Path, task: str | GlueTask) -> tuple[list[TextExample], list[dict], dict]:
    """Read GLUE task ``task``'s TSV ``path`` into ``(examples, skipped, info)``.

    ``skipped`` holds :func:`prep.stage.skip` records (``where="line N"``); ``info`` is the
    manifest's ``input`` record: the task, its ordered ``labels`` ([] for STS-B), ``label_type``
    ("str", or "float" for STS-B), the column names, and the row counts.
    """
    task = TASKS[task] if isinstance(task, str) else task
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GLUE {task.name} file not found: {path}")
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = None
    if task.header:
        header = next(reader, None)
        if header is None:
            raise GlueFormatError(f"{path}: empty file (GLUE {task.name} files start with a header)")
        header = [name.strip() for name in header]
    columns = {"text": task.text, "text_pair": task.text_pair, "label": task.label}
    positions = {role: _position(path, header, column, task) for role, column in columns.items() if column is not None}
    width = len(header) if header is not None else None
    examples, skipped, rows = [], [], 0
    for fields in reader:
        line = reader.line_num
        if not fields:  # a blank line is no row (CoLA's dev.tsv ends without a newline, others with one)
            continue
        example_id = str(rows)
        rows += 1
        width = width or len(fields)  # no header (CoLA): the first row sets the field count
        reason = None
        if len(fields) != width:
            reason = f"{len(fields)} tab-separated fields, expected {width} (a broken or truncated row)"
        elif max(positions.values()) >= len(fields):
            reason = f"{len(fields)} fields, the task reads field {max(positions.values()) + 1}"
        text = pair = label = None
        if reason is None:
            text = fields[positions["text"]]
            pair = fields[positions["text_pair"]] if "text_pair" in positions else None
            label, reason = _label(task, fields[positions["label"]])
            if not text.strip() or (pair is not None and not pair.strip()):
                reason = "empty sentence"
        if reason is not None:
            skipped.append(skip(example_id, reason, where=f"line {line}"))
            continue
        examples.append(TextExample(example_id, text, pair, label, line))
    if rows == 0:
        raise GlueFormatError(f"{path}: no data rows")
    info = {
        "format": "glue-tsv",
        "glue_task": task.name,
        "text_column": str(task.text),
        "text_pair_column": None if task.text_pair is None else str(task.text_pair),
        "label_column": str(task.label),
        "label_type": "float" if task.regression else "str",
        "labels": list(task.labels),
        "rows": rows,
        "texts": len(examples),
    }
    return examples, skipped, info


def read_glue_test(path: str | Path, task: str | GlueTask) -> tuple[list[TextExample], list[dict], dict]:
    """Read GLUE task ``task``'s test TSV ``path`` (header, index column, sentences, no label).

    Examples are named by the index column and carry no label (None). A row with another number of
    fields than the header, an empty or repeated index or an empty sentence is skipped with its
    line and reason. ``info`` is as :func:`read_glue`'s, with ``index_column``.
    """
    task = TASKS[task] if isinstance(task, str) else task
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GLUE {task.name} file not found: {path}")
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = [name.strip() for name in next(reader, None) or []]
    if not header:
        raise GlueFormatError(f"{path}: empty file (GLUE {task.name} test files start with a header)")
    index_column, text_column, pair_column = task.test_columns
    positions = {role: _position(path, header, column, task)
                 for role, column in (("index", index_column), ("text", text_column), ("text_pair", pair_column))
                 if column is not None}
    examples, skipped, seen, rows = [], [], set(), 0
    for fields in reader:
        line = reader.line_num
        if not fields:
            continue
        rows += 1
        where = f"line {line}"
        if len(fields) != len(header):
            skipped.append(skip(None, f"{len(fields)} tab-separated fields, expected {len(header)} "
                                      "(a broken or truncated row)", where=where))
            continue
        index = fields[positions["index"]].strip()
        text = fields[positions["text"]]
        pair = fields[positions["text_pair"]] if "text_pair" in positions else None
        reason = ("empty index" if not index else "duplicate index" if index in seen else
                  "empty sentence" if not text.strip() or (pair is not None and not pair.strip()) else None)
        if reason is not None:
            skipped.append(skip(index or None, reason, where=where))
            continue
        seen.add(index)
        examples.append(TextExample(index, text, pair, None, line))
    if rows == 0:
        raise GlueFormatError(f"{path}: no data rows")
    info = {
        "format": "glue-test-tsv",
        "glue_task": task.name,
        "index_column": index_column,
        "text_column": text_column,
        "text_pair_column": pair_column,
        "label_column": None,
        "label_type": "float" if task.regression else "str",
        "labels": list(task.labels),
        "rows": rows,
        "texts": len(examples),
        "labelled": False,
    }
    return examples, skipped, info
