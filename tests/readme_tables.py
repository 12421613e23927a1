"""Reading the Markdown tables of the README and docs/ pages and checking their figures against JSON values.

A figure agrees with its JSON value at the page's own precision: "75.3" agrees with 75.3242
(half a unit of the last digit shown). Used by tests/test_readme_figures.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

# A number standing alone (not the "1" of "F1" or the "2.0" of "dev-v2.0"), thousands commas and a
# trailing "x" (a speed-up) allowed.
_END = r"(?=x(?!\w)|[^\w.]|\.(?!\d)|$)"
NUMBER = re.compile(rf"(?<![\w.\-])-?(?:\d{{1,3}}(?:,\d{{3}})+|\d+)(?:\.\d+)?{_END}")


def load(path: Path):
    return json.loads(path.read_text(encoding="utf-8"))


def section(text: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"the page has no '## {title}' section"
    return match.group(1)


def tables(text: str) -> list[list[dict]]:
    """Markdown tables as lists of {header: cell} rows (bold markers stripped)."""
    found, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append([cell.strip().replace("**", "") for cell in line.strip().strip("|").split("|")])
            continue
        if len(block) > 2 and set("".join(block[1])) <= set("-: "):
            found.append([dict(zip(block[0], row)) for row in block[2:]])
        block = []
    return found


def numbers(cell: str) -> list[str]:
    return [n.replace(",", "") for n in NUMBER.findall(cell)]


def agrees(shown: str, value: float) -> bool:
    decimals = len(shown.split(".")[1]) if "." in shown else 0
    return abs(float(shown) - value) <= 0.5 * 10 ** -decimals + 1e-9


def assert_figures(cell: str, expected: list[float], where: str) -> None:
    shown = numbers(cell)
    assert len(shown) == len(expected), f"{where}: the page shows {shown}, the JSON backs {len(expected)} figures"
    wrong = [(s, e) for s, e in zip(shown, expected) if not agrees(s, e)]
    assert not wrong, f"{where}: figure shown vs JSON value: {wrong}"


def find_row(rows: list[dict], column: str, pattern: str) -> dict:
    matches = [row for row in rows if re.search(pattern, row[column])]
    assert len(matches) == 1, f"expected one table row whose '{column}' matches {pattern!r}, found {len(matches)}"
    return matches[0]


def check_rows(rows: list[dict], label: str, checks: dict, figure_columns: list[str], where: str) -> None:
    """Run each check on its row; any other row must show no figures."""
    checked = set()
    for pattern, check in checks.items():
        row = find_row(rows, label, pattern)
        checked.add(id(row))
        check(row)
    for row in rows:
        if id(row) not in checked:
            shown = [n for column in figure_columns for n in numbers(row[column])]
            assert not shown, f"{where}: row {row[label]!r} shows {shown} but no JSON check covers it"
