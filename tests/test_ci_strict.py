"""Under CI (CI=true) a missing prerequisite fails the run; elsewhere it skips with its reason.

A CI run that goes green because its data folder, its browser or a project module was missing
proves nothing. Only hardware a CI machine cannot have (a CUDA GPU, nsys) may skip there.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

import tests.conftest as conftest
from tests.conftest import REPO, shared_data, skip_or_fail

pytestmark = pytest.mark.fast

TESTS = Path(__file__).resolve().parent


@pytest.mark.parametrize("value", ["true", "1", "TRUE"])
def test_missing_data_fails_under_ci(monkeypatch, tmp_path, value):
    monkeypatch.setenv("CI", value)
    monkeypatch.setattr(conftest, "DATA_DIR", tmp_path / "no-such-folder")
    with pytest.raises(pytest.fail.Exception, match="real data not found: .*no-such-folder.*gap-test.tsv") as err:
        shared_data("gap/gap-test.tsv")
    assert "CI=true" in str(err.value)


@pytest.mark.parametrize("value", [None, "", "false", "0"])
def test_missing_data_skips_outside_ci(monkeypatch, tmp_path, value):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    monkeypatch.setattr(conftest, "DATA_DIR", tmp_path / "no-such-folder")
    with pytest.raises(pytest.skip.Exception, match="real data not found: .*BERTFLOW_DATA"):
        shared_data("squad/dev-v1.1.json")


def test_present_data_is_returned_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(conftest, "DATA_DIR", tmp_path)
    (tmp_path / "gap").mkdir()
    (tmp_path / "gap" / "x.tsv").write_text("ID\n")
    assert shared_data("gap/x.tsv") == tmp_path / "gap" / "x.tsv"


def test_skip_or_fail_keeps_the_reason(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium is not installed"):
        skip_or_fail("Chromium is not installed")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="^Chromium is not installed$"):
        skip_or_fail("Chromium is not installed")


def test_missing_chromium_fails_under_ci(monkeypatch):
    from tests.test_pipeline_scheduler import chromium_binary

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="Chromium is not installed"):
        chromium_binary()
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        chromium_binary()


def _skips(path: Path) -> list[tuple[int, str, str]]:
    """(line, name, source) of every pytest.skip / importorskip / xfail call and skip / skipif mark."""
    source = path.read_text(encoding="utf-8")
    found = []
    for node in ast.walk(ast.parse(source)):
        target = node.func if isinstance(node, ast.Call) else node
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):  # bare @pytest.mark.skip / xfail
            found += [(d.lineno, d.attr, ast.get_source_segment(source, d)) for d in node.decorator_list
                      if isinstance(d, ast.Attribute) and d.attr in ("skip", "xfail")]
        elif isinstance(node, ast.Call) and isinstance(target, ast.Attribute) and target.attr in (
                "skip", "importorskip", "xfail", "skipif"):
            found.append((node.lineno, target.attr, ast.get_source_segment(source, node)))
    return found


def test_only_hardware_skips_bypass_skip_or_fail():
    """No importorskip (a project import error must fail), no bare pytest.skip outside skip_or_fail,
    and the only skipif marks are for a CUDA GPU or nsys."""
    for path in sorted(TESTS.glob("*.py")):
        for line, name, text in _skips(path):
            where = f"{path.name}:{line}: {text}"
            if name == "skipif":
                # Hardware CI cannot have, or a feature the pinned library no longer has (named).
                assert ("cuda" in text.lower() or "nsys" in text.lower()
                        or (path.name == "test_hf_export.py" and "library gap" in text)), where
            else:
                assert (path.name, name) == ("conftest.py", "skip"), where


def _fake_path_without_chromium(tmp_path: Path) -> str:
    """A PATH where chromium is absent and apt-get fails (no root, no network)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apt-get").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "apt-get").chmod(0o755)
    return str(bin_dir)


@pytest.mark.parametrize("ci, returncode", [("true", 2), ("", 0)])
def test_make_test_deps_fails_under_ci_when_chromium_cannot_be_installed(tmp_path, ci, returncode):
    make = shutil.which("make")
    assert make, "make is needed to run the suite"
    env = {**os.environ, "PATH": _fake_path_without_chromium(tmp_path), "CI": ci}
    done = subprocess.run([make, "-s", "-C", str(REPO), "test-deps"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == returncode, done.stderr
    if ci:
        assert "chromium could not be installed; CI=true needs it" in done.stderr
    else:
        assert "the web-UI test will skip" in done.stdout


def test_ci_runner_sets_ci():
    script = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert 'export CI="${CI:-true}"' in script
    assert script.index("export CI=") < script.index("make test")
