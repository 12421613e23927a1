"""Reading GAP TSV files into clean examples, with a reason for every row left out.

GAP (github.com/google-research-datasets/gap-coreference) ships tab-separated files with a
header: ID, Text, Pronoun, Pronoun-offset, A, A-offset, A-coref, B, B-offset, B-coref, URL.
Offsets are character (code point) offsets into Text.

Files without the ``A-coref`` / ``B-coref`` columns (Kaggle's test-stage layout: ID, Text,
Pronoun, Pronoun-offset, A, A-offset, B, B-offset, URL) are read with ``labelled=False``, for
predictions: every example's label is :data:`LABEL_NONE`.

Two kinds of bad input are told apart:
- a file that is not a GAP TSV (bytes that are not UTF-8, a missing header column, a row with
  the wrong number of columns, an offset that is not an integer) raises :class:`GapFormatError`
  naming the file and the line, because nothing read from it can be trusted;
- a well-formed row whose content cannot become a feature (an offset that misses its name,
  both names marked coreferent, ...) is skipped with a reason, so the manifest accounts for it.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import NamedTuple

from prep.stage import ReadResult, skip

# URL is informative only; a file without it (e.g. a system-output style file) still reads.
REQUIRED_COLUMNS = (
    "ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "A-coref", "B", "B-offset", "B-coref",
)

# As GAP's official scorer (gap_scorer.py, constants.PRONOUNS) maps pronouns, plus the
# reflexives, which the scorer never meets in GAP but other data in this format may hold.
PRONOUN_GENDER = {
    "she": "F", "her": "F", "hers": "F", "herself": "F",
    "he": "M", "his": "M", "him": "M", "himself": "M",
}

LABEL_A, LABEL_B, LABEL_NEITHER = 0, 1, 2
LABEL_NONE = -1  # an unlabelled row (predictions on new data)
LABEL_COLUMNS = ("A-coref", "B-coref")

_INTEGER = re.compile(r"-?[0-9]+")


class GapFormatError(ValueError):
    """The file is not a readable GAP TSV; the message names the file and the line."""


class GapExample(NamedTuple):
    """One clean GAP row; mention spans are ``(char_start, char_end)`` in ``text``, end exclusive."""

    example_index: int  # row position in the file, header excluded (0-based)
    line: int  # 1-based line number in the file, for skip reports
    example_id: str
    text: str
    pronoun: tuple[int, int]
    a: tuple[int, int]
    b: tuple[int, int]
    label: int
    gender: str


def read_gap(path: str | Path, rows_per_chunk: int, labelled: bool = True) -> ReadResult:
    """Read a GAP TSV into chunks of :class:`GapExample` plus the rows skipped and why.

    ``labelled=False``: the coref columns are neither needed nor read (labels :data:`LABEL_NONE`).
    Raises :class:`GapFormatError` on a file that is not a well-formed GAP TSV.
    """
    if rows_per_chunk < 1:
        raise ValueError(f"rows_per_chunk must be >= 1, got {rows_per_chunk}")
    path = Path(path)
    examples: list[GapExample] = []
    skipped: list[dict] = []
    seen_ids: set[str] = set()
    rows = 0
    blank_lines = 0
    header: list[str] | None = None
    for line_no, fields in _read_lines(path):
        if fields is None:
            blank_lines += 1
            continue
        if header is None:
            header = _check_header(path, line_no, fields, labelled)
            continue
        if len(fields) != len(header):
            raise GapFormatError(
                f"{path}: line {line_no}: {len(fields)} tab-separated columns, the header has "
                f"{len(header)} (a tab inside Text, or a truncated row?)"
            )
        row = dict(zip(header, fields))
        example, reason = _parse_row(path, line_no, rows, row, seen_ids, labelled)
        if example is None:
            skipped.append(skip(row["ID"] or None, reason, where=f"line {line_no}"))
        else:
            examples.append(example)
        seen_ids.add(row["ID"])
        rows += 1
    if header is None:
        raise GapFormatError(f"{path}: line 1: empty file, expected a GAP header")
    chunks = [examples[i:i + rows_per_chunk] for i in range(0, len(examples), rows_per_chunk)]
    info = {"format": "gap-tsv", "rows": rows, "blank_lines": blank_lines, "labelled": labelled}
    return ReadResult(chunks=chunks, examples_in=rows, skipped=skipped, info=info)


def _read_lines(path: Path):
    """Yield ``(line_no, fields)`` per line; ``fields`` is None for an empty line.

    The file is split on ``\\n`` bytes before decoding so that a decoding error can name its
    line, and so that characters Python's ``str.splitlines`` treats as breaks (U+2028, U+0085)
    stay inside Text as GAP intends.
    """
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    for line_no, raw in enumerate(lines, start=1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise GapFormatError(
                f"{path}: line {line_no}: not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})"
            ) from None
        if line_no == 1:
            text = text.removeprefix("\ufeff")
        if not text:
            yield line_no, None
            continue
        try:
            fields = next(csv.reader((text,), delimiter="\t", quoting=csv.QUOTE_NONE))
        except csv.Error as err:
            raise GapFormatError(f"{path}: line {line_no}: {err}") from None
        yield line_no, fields


def _check_header(path: Path, line_no: int, fields: list[str], labelled: bool = True) -> list[str]:
    required = [name for name in REQUIRED_COLUMNS if labelled or name not in LABEL_COLUMNS]
    missing = [name for name in required if name not in fields]
    if missing:
        raise GapFormatError(
            f"{path}: line {line_no}: header lacks column(s) {', '.join(missing)}; a GAP TSV starts "
            f"with the tab-separated header {', '.join(required)}, URL"
        )
    duplicated = sorted({name for name in fields if fields.count(name) > 1})
    if duplicated:
        raise GapFormatError(f"{path}: line {line_no}: header repeats column(s) {', '.join(duplicated)}")
    return fields


def _parse_offset(path: Path, line_no: int, column: str, value: str) -> int:
    if not _INTEGER.fullmatch(value.strip()):
        raise GapFormatError(f"{path}: line {line_no}: {column} is {value!r}, not an integer")
    return int(value)


def _parse_coref(value: str) -> bool | None:
    # Case-insensitive, as the official scorer reads it.
    lowered = value.strip().lower()
    return {"true": True, "false": False}.get(lowered)


def _parse_row(path, line_no, index, row, seen_ids, labelled=True) -> tuple[GapExample | None, str | None]:
    """The row as a :class:`GapExample`, or ``(None, reason)`` when it must be skipped."""
    # Offsets are parsed first: a non-integer offset is a broken file, not a bad example.
    spans = {}
    for column, offset_column in (("Pronoun", "Pronoun-offset"), ("A", "A-offset"), ("B", "B-offset")):
        start = _parse_offset(path, line_no, offset_column, row[offset_column])
        spans[column] = (start, start + len(row[column]))
    example_id, text = row["ID"], row["Text"]
    if not example_id.strip():
        return None, "empty ID"
    if example_id in seen_ids:
        return None, "duplicate ID"  # the scorer keeps the first annotation too
    if not text.strip():
        return None, "empty text"
    for column, (start, end) in spans.items():
        if not row[column].strip():
            return None, f"{column} is empty"
        if start < 0 or text[start:end] != row[column]:
            return None, f"{column}-offset does not point at {column}"
    label = LABEL_NONE
    if labelled:
        a_coref, b_coref = _parse_coref(row["A-coref"]), _parse_coref(row["B-coref"])
        if a_coref is None or b_coref is None:
            return None, "coref value not TRUE or FALSE"
        if a_coref and b_coref:
            return None, "A-coref and B-coref both TRUE"
        label = LABEL_A if a_coref else LABEL_B if b_coref else LABEL_NEITHER
    gender = PRONOUN_GENDER.get(row["Pronoun"].lower())
    if gender is None:
        return None, "pronoun has no gender"
    return GapExample(
        example_index=index,
        line=line_no,
        example_id=example_id,
        text=text,
        pronoun=spans["Pronoun"],
        a=spans["A"],
        b=spans["B"],
        label=label,
        gender=gender,
    ), None
