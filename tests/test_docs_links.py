"""Every relative link of README.md and docs/**/*.md resolves, and the README's repository paths exist.

A link ``[text](path)`` or ``[text](path#anchor)`` (images too; not http(s), mailto or any other
scheme) must name a file or folder of the repository, relative to its page: one git tracks, or a
new one it does not ignore, so a link to something only this checkout has (runs/, models/) fails.
An ``#anchor`` on a Markdown page must be one of its headings, as GitHub spells heading anchors.
Code blocks and code spans are not links. A code span that is a path under docs/, tests/ or
bench/ (from the repository root, as the README and docs/ write them) must exist as well.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import unquote

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.fast


LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")
CODE_SPAN = re.compile(r"`([^`\n]+)`")
REPO_PATH = re.compile(r"^(?:docs|tests|bench)/[\w./-]*$")
HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def repo_paths(root: Path) -> set[str]:
    """Files git tracks or would add (untracked, not ignored), and every folder above them, relative to root."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=root,
                            capture_output=True, text=True, check=True).stdout.splitlines()
    paths = set()
    for name in listed:
        if (root / name).exists():  # a tracked file deleted in the working tree does not count
            paths.add(name)
            paths.update(str(parent) for parent in Path(name).parents if str(parent) != ".")
    return paths


def prose_lines(text: str) -> list[str]:
    """The page's lines with fenced code blocks blanked (line numbers kept)."""
    lines, fence = [], None
    for line in text.splitlines():
        marker = re.match(r"^\s*(`{3,}|~{3,})", line)
        if fence is None and marker:
            fence = marker.group(1)[0] * 3
            lines.append("")
        elif fence is not None:
            lines.append("")
            if line.strip().startswith(fence):
                fence = None
        else:
            lines.append(line)
    return lines


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: links reduced to their text, lower case, punctuation dropped, spaces to -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a Markdown page; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(text):
        match = HEADING.match(line)
        if not match:
            continue
        base = anchor(match.group(1))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    found.update(re.findall(r"<a\s+(?:name|id)=\"([^\"]+)\"", text))
    return found


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every Markdown link outside code."""
    found = []
    lines = prose_lines(text)
    for number, line in enumerate(lines, 1):
        prose = CODE_SPAN.sub(lambda m: " " * len(m.group(0)), line)
        found.extend((number, target) for target in LINK.findall(prose))
    return found


def broken_links(page: Path, root: Path, paths: set[str]) -> list[str]:
    """``page:line: target (why)`` for each relative link of ``page`` that does not resolve."""
    text = page.read_text(encoding="utf-8")
    where = page.relative_to(root).as_posix()
    broken = []
    for number, target in links(text):
        if SCHEME.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        resolved = (page.parent / unquote(path_part)).resolve() if path_part else page.resolve()
        try:
            name = resolved.relative_to(root.resolve()).as_posix()
        except ValueError:
            broken.append(f"{where}:{number}: {target} (outside the repository)")
            continue
        if name not in paths and name != ".":
            broken.append(f"{where}:{number}: {target} (no such file or folder in the repository)")
        elif fragment and resolved.suffix == ".md" and fragment not in anchors(resolved.read_text(encoding="utf-8")):
            broken.append(f"{where}:{number}: {target} (no heading #{fragment} on {name})")
    return broken


def missing_code_paths(page: Path, root: Path, paths: set[str]) -> list[str]:
    """``page:line: path`` for each code span of ``page`` that is a docs/, tests/ or bench/ path and is missing."""
    where = page.relative_to(root).as_posix()
    missing = []
    for number, line in enumerate(prose_lines(page.read_text(encoding="utf-8")), 1):
        for span in CODE_SPAN.findall(line):
            name = span.rstrip("/")
            if REPO_PATH.match(span) and name not in paths:
                missing.append(f"{where}:{number}: `{span}`")
    return missing


def pages(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def test_every_docs_link_resolves():
    paths = repo_paths(REPO)
    broken = [line for page in pages(REPO) for line in broken_links(page, REPO, paths)]
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_named_repo_paths_exist():
    paths = repo_paths(REPO)
    missing = [line for page in pages(REPO) for line in missing_code_paths(page, REPO, paths)]
    assert not missing, "paths named in code spans that do not exist:\n" + "\n".join(missing)


# --- the checker itself ------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "docs" / "guides").mkdir(parents=True)
    (tmp_path / "docs" / "guides" / "prep.md").write_text(
        "# Feature generation (`prep/`)\n\n## Bad input\n\n## Bad input\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_x.py").write_text("")
    return tmp_path


@pytest.mark.parametrize("text, expected", [
    ("[ok](docs/guides/prep.md) [folder](docs/guides/) [anchor](docs/guides/prep.md#bad-input-1)", []),
    ("[web](https://example.org/x) [mail](mailto:a@b.c) `[code](nowhere.md)`\n```\n[fenced](nowhere.md)\n```", []),
    ("[heading](docs/guides/prep.md#feature-generation-prep) [self](#readme)\n# README", []),
    ("see [x](docs/guides/missing.md)", ["README.md:1: docs/guides/missing.md (no such file or folder"]),
    ("[y](docs/guides/prep.md#no-such)", ["README.md:1: docs/guides/prep.md#no-such (no heading #no-such"]),
    ("\n[z](../elsewhere.md)", ["README.md:2: ../elsewhere.md (outside the repository)"]),
])
def test_broken_links_are_found(site, text, expected):
    (site / "README.md").write_text(text)
    broken = broken_links(site / "README.md", site, repo_paths(site))
    assert len(broken) == len(expected) and all(b.startswith(e) for b, e in zip(broken, expected)), broken


def test_missing_code_paths_are_found(site):
    (site / "README.md").write_text("`tests/test_x.py`, `docs/guides/`, `runs/x`, `tests/test_gone.py`\n"
                                    "```\n`bench/in_a_fence.py`\n```\n")
    assert missing_code_paths(site / "README.md", site, repo_paths(site)) == ["README.md:1: `tests/test_gone.py`"]


def test_anchors_follow_github():
    assert (anchor("Any encoder: RoBERTa, MPNet, ... (`make model-mpnet`)")
            == "any-encoder-roberta-mpnet--make-model-mpnet")
    assert anchor("GAP test, F1 75.3 ± 0.1") == "gap-test-f1-753--01"
