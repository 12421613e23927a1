"""GAP files: the gold TSV, Kaggle's submission.csv and the benchmark's system TSV.

Readers are strict: a truncated or malformed row, an unknown or duplicate id, or a missing id is
a :class:`GapFormatError` that names the file and the line, never a silently smaller score.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from tasks.gap.metrics import LABELS, GapGold
from tasks.gap.read import PRONOUN_GENDER, GapFormatError

GOLD_COLUMNS = ("ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "A-coref", "B",
                "B-offset", "B-coref", "URL")
SUBMISSION_HEADER = ("ID", *LABELS)




def _bool(value: str, path: Path, line: int, column: str) -> bool:
    lowered = value.strip().lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    raise GapFormatError(f"{path}: line {line}: {column} must be TRUE or FALSE, got {value!r}")


def _read_text(path: Path) -> str:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"GAP file not found: {path}")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise GapFormatError(f"{path}: not UTF-8 ({err.reason} at byte {err.start})") from None


def read_gap_gold(path: str | Path) -> list[GapGold]:
    """The gold rows of a GAP TSV (with its header), in file order."""
    path = Path(path)
    lines = _read_text(path).splitlines()
    if not lines:
        raise GapFormatError(f"{path}: empty file")
    header = lines[0].split("\t")
    missing = [name for name in ("ID", "Pronoun", "A-coref", "B-coref") if name not in header]
    if missing:
        raise GapFormatError(f"{path}: line 1: header lacks {missing}; expected the GAP columns {list(GOLD_COLUMNS)}")
    col = {name: header.index(name) for name in ("ID", "Pronoun", "A-coref", "B-coref")}
    rows, seen = [], set()
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise GapFormatError(
                f"{path}: line {number}: {len(fields)} fields, header has {len(header)} (truncated or malformed row)"
            )
        example_id = fields[col["ID"]]
        if example_id in seen:
            raise GapFormatError(f"{path}: line {number}: duplicate ID {example_id!r}")
        seen.add(example_id)
        pronoun = fields[col["Pronoun"]].lower()
        if pronoun not in PRONOUN_GENDER:
            raise GapFormatError(f"{path}: line {number}: pronoun {fields[col['Pronoun']]!r} has no GAP gender")
        row = GapGold(
            example_id=example_id,
            a_coref=_bool(fields[col["A-coref"]], path, number, "A-coref"),
            b_coref=_bool(fields[col["B-coref"]], path, number, "B-coref"),
            gender=PRONOUN_GENDER[pronoun],
        )
        if row.a_coref and row.b_coref:
            raise GapFormatError(f"{path}: line {number}: both A-coref and B-coref are TRUE")
        rows.append(row)
    if not rows:
        raise GapFormatError(f"{path}: no data rows")
    return rows


def write_submission_csv(path: str | Path, example_ids: Sequence[str], probs) -> None:
    """Kaggle's format: header ``ID,A,B,NEITHER``, one row of probabilities per example."""
    array = np.asarray(probs, dtype=np.float64)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(SUBMISSION_HEADER)
        for example_id, row in zip(example_ids, array, strict=True):
            writer.writerow([example_id, *(repr(float(p)) for p in row)])


def write_system_tsv(path: str | Path, example_ids: Sequence[str], decisions: Sequence[tuple[bool, bool]]) -> None:
    """The GAP benchmark's system format: headerless ``ID<TAB>A-coref<TAB>B-coref`` (TRUE/FALSE)."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        for example_id, (a_coref, b_coref) in zip(example_ids, decisions, strict=True):
            handle.write(f"{example_id}\t{'TRUE' if a_coref else 'FALSE'}\t{'TRUE' if b_coref else 'FALSE'}\n")


def _check_ids(path: Path, found: list[str], gold_ids: Sequence[str]) -> None:
    gold_set, found_set = set(gold_ids), set(found)
    missing = [i for i in gold_ids if i not in found_set]
    extra = [i for i in found if i not in gold_set]
    problems = []
    if missing:
        problems.append(f"{len(missing)} gold ids have no prediction (e.g. {missing[:3]})")
    if extra:
        problems.append(f"{len(extra)} ids are not in the gold data (e.g. {extra[:3]})")
    if problems:
        raise GapFormatError(f"{path}: " + "; ".join(problems))


def read_submission_csv(path: str | Path, gold_ids: Sequence[str]) -> np.ndarray:
    """Probabilities ``[N, 3]`` from a Kaggle submission, re-ordered to ``gold_ids``."""
    path = Path(path)
    reader = csv.reader(_read_text(path).splitlines())
    header = next(reader, None)
    if header is None or tuple(h.strip() for h in header) != SUBMISSION_HEADER:
        raise GapFormatError(f"{path}: line 1: header must be {','.join(SUBMISSION_HEADER)}, got {header}")
    by_id: dict[str, list[float]] = {}
    order = []
    for number, fields in enumerate(reader, start=2):
        if not fields:
            continue
        if len(fields) != len(SUBMISSION_HEADER):
            raise GapFormatError(f"{path}: line {number}: {len(fields)} fields, expected 4 (truncated or malformed row)")
        example_id = fields[0]
        if example_id in by_id:
            raise GapFormatError(f"{path}: line {number}: duplicate ID {example_id!r}")
        try:
            values = [float(v) for v in fields[1:]]
        except ValueError:
            raise GapFormatError(f"{path}: line {number}: probabilities must be numbers, got {fields[1:]}") from None
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise GapFormatError(f"{path}: line {number}: probabilities must be finite and >= 0, got {values}")
        by_id[example_id] = values
        order.append(example_id)
    _check_ids(path, order, gold_ids)
    return np.array([by_id[i] for i in gold_ids], dtype=np.float64)


def read_system_tsv(path: str | Path, gold_ids: Sequence[str]) -> dict[str, tuple[bool, bool]]:
    """(A-coref, B-coref) per id from a headerless GAP system TSV; every gold id must be there."""
    path = Path(path)
    decisions: dict[str, tuple[bool, bool]] = {}
    order = []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 3:
            raise GapFormatError(f"{path}: line {number}: {len(fields)} fields, expected ID, A-coref, B-coref")
        if fields[0] in decisions:
            raise GapFormatError(f"{path}: line {number}: duplicate ID {fields[0]!r}")
        decisions[fields[0]] = (_bool(fields[1], path, number, "A-coref"), _bool(fields[2], path, number, "B-coref"))
        order.append(fields[0])
    _check_ids(path, order, gold_ids)
    return decisions
