"""Reading a user's labelled CSV / TSV / JSON-lines / Parquet file into clean text examples.

    examples, skipped, info = read_examples("train.csv", text_column="Text", label_column="Category")
    examples, skipped, info = read_examples("news.parquet", text_column="body", label_column=None)  # unlabelled

Two kinds of bad input are told apart, as in tasks/gap/read.py:

- a file that cannot be read as the table it claims to be (bytes that are not UTF-8, a missing
  column, a row with the wrong number of fields, a line that is not a JSON object, no data rows
  at all, a regression label that is not a number) raises :class:`TextClassFormatError` naming
  the file, the line (Parquet: the row) and the column, because nothing read from it can be trusted;
- a well-formed row that cannot be a training example (empty text, missing label, a repeated
  id) is skipped with a reason and its line (``"line 7"``; Parquet ``"row 7"``, 1-based over the
  data rows), so the prep manifest accounts for it.

A CSV / TSV field may be of any size (Python's csv module stops at 128 KiB unless told
otherwise): a long document is what token folding is for. ``label_column=None`` reads a file
without labels (texts to predict): every example's label is None and no row is skipped for one.

Labels are kept as names (strings) for classification: class ids are positions in the ordered
label set (:func:`label_set`), so ``"01"`` and ``"1"`` are one class when the labels are
integers. Regression labels (``label_type="float"``) are floats.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Iterator, NamedTuple

from prep.stage import skip

FORMATS = ("csv", "tsv", "jsonl", "parquet")
LABEL_TYPES = ("auto", "int", "str", "float")
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
               ".parquet": "parquet", ".pq": "parquet"}
_INTEGER = re.compile(r"[+-]?[0-9]+")

SKIP_EMPTY_TEXT = "empty text"
SKIP_EMPTY_PAIR = "empty text pair"
SKIP_MISSING_LABEL = "missing label"
SKIP_EMPTY_ID = "empty id"
SKIP_DUPLICATE_ID = "duplicate id"
SKIP_UNKNOWN_LABEL = "label not in the training label set"


class TextClassFormatError(ValueError):
    """The file cannot be read as a labelled table; the message names the file, line and column."""


class TextExample(NamedTuple):
    """One kept row. ``label`` is the label's name (classification), its value (regression), or
    None (a file read without labels)."""

    example_id: str  # the id column's value, else "row-<line>"
    text: str
    text_pair: str | None
    label: str | float | None
    line: int  # 1-based line of the row's first line in the file (Parquet: the row's number)
    unit: str = "line"  # what ``line`` counts: "line" (text formats) or "row" (Parquet)

    @property
    def where(self) -> str:
        """``"line 7"`` / ``"row 7"``: where the row is, as skip records and messages say it."""
        return f"{self.unit} {self.line}"


def detect_format(path: str | Path, format: str | None = None) -> str:
    """``format`` if given, else the one the file name's extension says."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        return format
    found = _EXTENSIONS.get(Path(path).suffix.lower())
    if found is None:
        raise TextClassFormatError(
            f"{path}: cannot tell the format from the extension {Path(path).suffix!r}; "
            f"name it .csv, .tsv, .jsonl or .parquet, or pass the format ({', '.join(FORMATS)})"
        )
    return found


def read_examples(path: str | Path, format: str | None = None, text_column: str = "text",
                  label_column: str | None = "label", text_pair_column: str | None = None,
                  id_column: str | None = None, label_type: str = "auto") -> tuple[list[TextExample], list[dict], dict]:
    """Read a labelled table into ``(examples, skipped, info)``.

    ``examples`` keep file order; ``skipped`` are :func:`prep.stage.skip` records with
    ``where="line N"`` (Parquet: ``"row N"``); ``info`` is the manifest's ``input`` record (format,
    the column names, the resolved ``label_type``, the ordered ``labels`` ([] for regression), row
    counts). ``label_type``: ``auto`` is ``int`` when every kept label is an integer, else ``str``;
    ``float`` (regression) is used only when asked. ``label_column=None``: the file has no labels
    (every label None, ``info["label_type"]`` None). Raises :class:`TextClassFormatError`.
    """
    if label_type not in LABEL_TYPES:
        raise ValueError(f"label_type must be one of {LABEL_TYPES}, got {label_type!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"input file not found: {path}")
    format = detect_format(path, format)
    columns = {"text": text_column, "label": label_column, "text_pair": text_pair_column, "id": id_column}
    unit = "row" if format == "parquet" else "line"
    examples: list[TextExample] = []
    skipped: list[dict] = []
    seen_ids: set[str] = set()
    raw_labels: list[tuple[str, int]] = []  # (raw label, line) of kept rows, parsed below
    row_count = 0
    for line, row in _read_rows(path, format, columns):
        row_count += 1
        where = f"{unit} {line}"
        example_id = f"row-{line}"
        if id_column is not None:
            example_id = (row.get(id_column) or "").strip()
            if not example_id:
                skipped.append(skip(None, SKIP_EMPTY_ID, where=where))
                continue
            if example_id in seen_ids:
                # Evaluation scores per id: a second row with the same id would be ambiguous.
                skipped.append(skip(example_id, SKIP_DUPLICATE_ID, where=where))
                continue
            seen_ids.add(example_id)
        text = row.get(text_column) or ""
        pair = row.get(text_pair_column) if text_pair_column else None
        label = (row.get(label_column) or "").strip() if label_column is not None else None
        reason = (SKIP_EMPTY_TEXT if not text.strip() else
                  SKIP_EMPTY_PAIR if text_pair_column and not (pair or "").strip() else
                  SKIP_MISSING_LABEL if label_column is not None and not label else None)
        if reason:
            skipped.append(skip(example_id, reason, where=where))
            continue
        examples.append(TextExample(example_id, text, pair, label, line, unit))
        if label_column is not None:
            raw_labels.append((label, line))
    if row_count == 0:
        raise TextClassFormatError(f"{path}: no data rows (an empty file, or a header only)")
    if label_column is None:
        resolved, labels = None, []
    else:
        resolved = resolve_label_type(label_type, [label for label, _ in raw_labels])
        values = [parse_label(path, f"{unit} {line}", label_column, label, resolved) for label, line in raw_labels]
        examples = [example._replace(label=value) for example, value in zip(examples, values)]
        labels = label_set(values, resolved)
    info = {
        "format": format,
        "text_column": text_column,
        "label_column": label_column,
        "text_pair_column": text_pair_column,
        "id_column": id_column,
        "label_type": resolved,
        "labels": labels,
        "rows": row_count,
        "texts": len(examples),
    }
    return examples, skipped, info


def resolve_label_type(label_type: str, raw_labels: list[str]) -> str:
    """``auto`` -> ``int`` when every label is an integer (and there is one), else ``str``."""
    if label_type != "auto":
        return label_type
    return "int" if raw_labels and all(_INTEGER.fullmatch(label) for label in raw_labels) else "str"


def parse_label(path, where: str, column: str, raw: str, label_type: str) -> str | float:
    """A raw label as its name (``int``: canonical digits; ``str``: as written) or, for ``float``, its value.

    ``where`` (``"line 7"``, ``"row 7"``) places the row in a message.
    """
    if label_type == "str":
        return raw
    if label_type == "int":
        if not _INTEGER.fullmatch(raw):
            raise TextClassFormatError(f"{path}: {where}: column {column!r}: label {raw!r} is not an integer")
        return str(int(raw))
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise TextClassFormatError(
            f"{path}: {where}: column {column!r}: label {raw!r} is not a finite number (label_type float)"
        )
    return value


def label_set(labels, label_type: str) -> list[str]:
    """The ordered label names: integers numerically, strings as strings; [] for regression."""
    if label_type == "float":
        return []
    names = set(labels)
    return sorted(names, key=int) if label_type == "int" else sorted(names)


def parse_label_list(text: str, label_type: str) -> list[str]:
    """A JSON list of label names (``'["neg", "pos"]'`` or ``'[0, 1, 2]'``) as names, order kept.

    ``label_type`` ``auto`` resolves from the list itself (all integers -> ``int``).
    """
    try:
        values = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"labels must be a JSON list of label names, e.g. '[\"neg\", \"pos\"]': {err}") from None
    if not isinstance(values, list) or not values:
        raise ValueError(f"labels must be a non-empty JSON list, got {text!r}")
    if not all(isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in values):
        raise ValueError(f"labels must hold strings or integers, got {text!r}")
    names = [str(v).strip() for v in values]
    resolved = resolve_label_type(label_type, names)
    if resolved == "int":
        if not all(_INTEGER.fullmatch(name) for name in names):
            raise ValueError(f"labels {text!r} are not all integers (label_type int)")
        names = [str(int(name)) for name in names]
    if len(set(names)) != len(names):
        raise ValueError(f"labels repeat a name: {text!r}")
    return names


def integer_name(label: str) -> str:
    """``"01"`` -> ``"1"``: an integer label's canonical name; a label that is no integer stays as written."""
    return str(int(label)) if _INTEGER.fullmatch(label) else label


def label_counts(examples: list[TextExample]) -> dict[str, int]:
    return dict(Counter(str(example.label) for example in examples))


# --- rows -------------------------------------------------------------------------------------
def _read_rows(path: Path, format: str, columns: dict) -> Iterator[tuple[int, dict]]:
    """``(line or row number, {column: str or None})`` per data row, the columns checked first."""
    if format == "parquet":
        return _parquet_rows(path, {role: name for role, name in columns.items() if name is not None})
    rows = _json_rows(path) if format == "jsonl" else _table_rows(path, "\t" if format == "tsv" else ",")
    return _checked_rows(path, rows, columns)


def _allow_long_fields() -> None:
    """Lift the csv module's 128 KiB field limit (process-wide) to the largest the platform takes."""
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:  # a C long of 32 bits
            limit //= 2


def _decode(path: Path) -> str:
    """The file as text; a byte that is not UTF-8 is reported with its line and byte column."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise TextClassFormatError(
            f"{path}: line {line}: byte column {column}: byte 0x{data[err.start]:02x} is not UTF-8 "
            "(save the file as UTF-8)"
        ) from None


def _table_rows(path: Path, delimiter: str) -> Iterator[tuple[int, list[str] | dict | None]]:
    """``(line, fields)`` per CSV/TSV record (``line``: its first line); None for a blank line."""
    _allow_long_fields()
    reader = csv.reader(io.StringIO(_decode(path), newline=""), delimiter=delimiter)
    end = 0
    while True:
        first = end + 1
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise TextClassFormatError(f"{path}: line {first}: not a well-formed record: {err}") from None
        end = reader.line_num
        yield first, (fields or None)


def _json_rows(path: Path) -> Iterator[tuple[int, dict | None]]:
    """``(line, object)`` per JSON line; None for a blank line."""
    for line, text in enumerate(_decode(path).split("\n"), start=1):
        if not text.strip():
            yield line, None
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise TextClassFormatError(f"{path}: line {line}: column {err.colno}: not valid JSON: {err.msg}") from None
        if not isinstance(value, dict):
            hint = " (a JSON array file? write one object per line)" if isinstance(value, list) else ""
            raise TextClassFormatError(f"{path}: line {line}: a JSON {type(value).__name__}, not an object{hint}")
        yield line, value


def _parquet_rows(path: Path, wanted: dict) -> Iterator[tuple[int, dict]]:
    """``(row, {column: str or None})`` per Parquet row (1-based), read a batch of rows at a time.

    Strings are kept, numbers and booleans become the text a CSV cell would hold, nulls (and a
    float NaN, pandas' missing value) are missing; a column of another type (lists, structs,
    dates...) is a format error, as a JSON list or object is.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise TextClassFormatError(f"{path}: not a readable Parquet file ({err})") from None
    schema = parquet.schema_arrow
    _check_columns(path, None, schema.names, wanted, "the file has columns")
    for name in wanted.values():
        kind = schema.field(name).type
        if pa.types.is_dictionary(kind):
            kind = kind.value_type
        readable = (pa.types.is_string, pa.types.is_large_string, getattr(pa.types, "is_string_view", bool),
                    pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean, pa.types.is_decimal,
                    pa.types.is_null)
        if not any(is_kind(kind) for is_kind in readable):
            raise TextClassFormatError(f"{path}: column {name!r} holds {kind}, not texts or numbers")
    names = list(dict.fromkeys(wanted.values()))
    row = 0
    try:
        for batch in parquet.iter_batches(columns=names):
            values = {name: batch.column(name).to_pylist() for name in names}
            for i in range(batch.num_rows):
                row += 1
                yield row, {name: _parquet_field(values[name][i]) for name in names}
    except pa.ArrowException as err:
        raise TextClassFormatError(f"{path}: after row {row}: the Parquet data cannot be read ({err})") from None


def _parquet_field(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def _checked_rows(path: Path, rows, columns: dict) -> Iterator[tuple[int, dict]]:
    """Rows as ``{column: str}``, after checking the header (or first JSON object) has the columns.

    CSV/TSV rows must have the header's field count; a JSON line may lack a key after the
    first line (read as empty, so the row is skipped), but not hold a list or object there.
    """
    wanted = {role: name for role, name in columns.items() if name is not None}
    header = None
    for line, row in rows:
        if row is None:
            continue
        if isinstance(row, list):
            if header is None:
                header = _check_columns(path, line, [name.strip() for name in row], wanted, "the header has")
                continue
            if len(row) != len(header):
                raise TextClassFormatError(
                    f"{path}: line {line}: {len(row)} fields, the header has {len(header)} "
                    "(an unquoted delimiter or a truncated row?)"
                )
            yield line, dict(zip(header, row))
            continue
        if header is None:
            header = _check_columns(path, line, list(row), wanted, "the first JSON object has keys")
        yield line, {name: _json_field(path, line, name, row.get(name)) for name in wanted.values()}


def _check_columns(path: Path, line: int | None, names: list[str], wanted: dict, found: str) -> list[str]:
    """``names`` (a header's, or a Parquet file's columns: ``line`` None) if every wanted column is there once."""
    at = f"{path}: line {line}" if line is not None else f"{path}"
    for role, name in wanted.items():
        if name not in names:
            option = f"{role}_column" if role != "text_pair" else "text_pair_column"
            raise TextClassFormatError(
                f"{at}: no column {name!r} ({option}); {found}: {', '.join(map(repr, names))}"
            )
    repeated = sorted({name for name in names if names.count(name) > 1} & set(wanted.values()))
    if repeated:
        raise TextClassFormatError(f"{at}: the header repeats column(s) {', '.join(repeated)}")
    return names


def _json_field(path: Path, line: int, name: str, value) -> str | None:
    """A JSON value as the text a CSV cell would hold (numbers as written, null as missing)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    raise TextClassFormatError(f"{path}: line {line}: column {name!r}: a JSON {type(value).__name__}, not a text or number")
