"""luigi.cfg holds only what differs from the code: no key of a task's section restates the default
of the parameter it sets (a restated default is a second copy that drifts when the code changes)."""

from __future__ import annotations

import configparser
from pathlib import Path

import luigi.interface  # noqa: F401 - Luigi's own sections ([core], [scheduler], [retcode], [worker]) are
import luigi.retcodes  # noqa: F401 - task classes too, checked like bertflow's
import luigi.scheduler  # noqa: F401
import luigi.worker  # noqa: F401
import pytest
from luigi.task_register import Register, TaskClassException

import pipeline  # noqa: F401 - registers every task class
from tests.conftest import REPO

CONFIG_FILES = ("luigi.cfg", "luigi.offline.cfg")


def restated_defaults(path: Path) -> tuple[list[str], set[str]]:
    """(``"[Section] key = value"`` for each key that restates its parameter's default, the sections checked).

    A section is checked when it is named after a task class; ``[GlueFineTuned.cola]`` and the like are a
    suite member's recipe (pipeline.suite), read as given, and ``[inputs]`` / ``[resources]`` are no class."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path)
    found, checked = [], set()
    for section in parser.sections():
        try:
            task_class = Register.get_task_cls(section)
        except TaskClassException:
            continue
        checked.add(section)
        params = dict(task_class.get_params())
        for key, value in parser.items(section):
            param = params.get(key.replace("-", "_"))
            if param is None or param._default is luigi.parameter._no_value:
                continue
            if param.normalize(param.parse(value)) == param.normalize(param._default):
                found.append(f"[{section}] {key} = {value}")
    return found, checked


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_no_key_restates_a_default(name):
    found, checked = restated_defaults(REPO / name)
    assert not found, f"{name}: these keys restate the code's defaults; remove them: {found}"
    if name == "luigi.cfg":
        assert {"core", "scheduler", "retcode", "FullRun", "GapFineTuned", "GlueFineTuned", "Sweep",
                "Profile"} <= checked


def test_the_check_finds_a_restated_default(tmp_path):
    cfg = tmp_path / "luigi.cfg"
    cfg.write_text("[GapFineTuned]\nprecision = auto\nepochs = 1\n[RaceEvaluation]\nbatch_size = 16\n"
                   "[GlueFineTuned.cola]\nepochs = 3\n[inputs]\ndata_dir = data\n")
    found, checked = restated_defaults(cfg)
    assert found == ["[GapFineTuned] precision = auto", "[RaceEvaluation] batch_size = 16"]
    assert checked == {"GapFineTuned", "RaceEvaluation"}
