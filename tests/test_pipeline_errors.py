"""A ``luigi`` command given bad input or bad parameters ends with bertflow's one-line message and no
traceback on the console; the traceback is in ``<runs_dir>/logs/luigi.log``, and ``--log-level
DEBUG`` shows it on the console as Luigi prints it (issue 27, 5)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.test_pipeline_fullrun import write_cfg

# Exit codes (luigi.cfg [retcode]): a task refused as it is made, before anything is scheduled, is
# Luigi's unhandled_exception (40); a task that fails as it runs, task_failed (30).
REFUSED, FAILED = 40, 30

# (id, command line after "luigi --module pipeline", exit code, what the one line says); {data}, {one_class}
# and {missing} are files of the test's own.
CASES = [
    pytest.param("GapFeatures --data gap-development --shards 0", REFUSED,
                 "error: GapFeatures: --shards must be >= 1, got 0", id="shards-0", marks=pytest.mark.fast),
    pytest.param("GlueResults --tasks rte,foo", REFUSED,
                 "error: unknown GLUE task(s) ['foo']; choose from cola, sst2", id="glue-member"),
    pytest.param("TextClassification --data {data} --text-column Body", FAILED,
                 "FAILED Splits(task=textclass, ", id="missing-column", marks=pytest.mark.fast),
    pytest.param("TextClassification --data {missing}", REFUSED,
                 "error: textclass: input file not found: {missing}", id="missing-data"),
    pytest.param("TextClassification --data {data} --TextclassFeatures-max-seq-length 2", REFUSED,
                 "error: TextclassFeatures: max_seq_length must be >= 3, got 2", id="max-seq-length"),
    pytest.param('GapResults --heads ["multiply", "foo"]', REFUSED,
                 "error: GapResults: unknown heads ['foo']; choose from ['concat', 'multiply', 'segment']",
                 id="unknown-head"),
    pytest.param("GapResults --seeds [1, 1]", REFUSED,
                 "error: GapResults: give distinct seeds and at least one head (seeds [1, 1])", id="seeds"),
    pytest.param("TextClassification --data {one_class}", FAILED,
                 "the training split has one class only, 'sport' (16 texts)", id="one-class"),
]
# What the missing-column case's FAILED line ends with, after the task's description.
MISSING_COLUMN = "no column 'Body' (text_column); the header has: 'text', 'label'"


@pytest.fixture
def command(tmp_path):
    """``run(args)``: luigi on a tmp runs folder (a tmp luigi.cfg read after the repository's), as a user types it."""
    data, one_class = tmp_path / "news.csv", tmp_path / "sport.csv"
    with open(data, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "label"]] + [[f"story {i}", "ab"[i % 2]] for i in range(40)])
    with open(one_class, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "label"]] + [[f"match {i}", "sport"] for i in range(20)])
    files = {"data": data, "one_class": one_class, "missing": tmp_path / "no-such.csv"}
    runs = tmp_path / "runs"
    cfg = write_cfg(tmp_path / "luigi.cfg", {"bertflow": {"runs_dir": runs}})
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg), "OMP_NUM_THREADS": "1"}

    def run(line: str, *extra: str) -> tuple[int, str, Path]:
        argv = [str(Path(sys.executable).with_name("luigi")), "--module", "pipeline", *split_line(line.format(**files)),
                "--local-scheduler", *extra]
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        return done.returncode, done.stdout + done.stderr, runs / "logs" / "luigi.log"

    run.files = files
    return run


def split_line(line: str) -> list[str]:
    """Words, a ``[...]`` JSON list kept as one (as a shell's quotes would)."""
    words, depth = [], 0
    for word in line.split(" "):
        if depth:
            words[-1] += " " + word
        else:
            words.append(word)
        depth += word.count("[") - word.count("]")
    return words


@pytest.mark.parametrize("line,code,message", CASES)
def test_bad_input_ends_in_one_line_and_no_traceback(command, line, code, message):
    rc, output, log = command(line)
    message = message.format(**command.files)
    assert rc == code, output
    assert message in output and "Traceback" not in output, output
    [said] = [text for text in output.splitlines() if message in text]
    assert said.startswith("bertflow ") and said.endswith(f" (traceback: {log})"), said
    if "--text-column Body" in line:
        assert MISSING_COLUMN in said
    # The traceback is kept where the line says.
    assert "Traceback (most recent call last):" in log.read_text(encoding="utf-8")


def test_log_level_debug_shows_the_traceback_on_the_console(command):
    rc, output, log = command("TextClassification --data {data} --text-column Body", "--log-level", "DEBUG")
    assert rc == FAILED and "Traceback (most recent call last):" in output and MISSING_COLUMN in output
    assert MISSING_COLUMN in log.read_text(encoding="utf-8")


@pytest.mark.fast
def test_a_traceback_luigi_logs_reaches_the_console_as_one_line(tmp_path, capsys, caplog):
    """Both shapes Luigi logs: an exception record, and a traceback pasted into the message (a
    complete() or requires() that raised, 'Will not run ...'); both kept whole in the log file."""
    import logging
    import traceback

    from pipeline.console import LUIGI_LOGGER
    from tests.conftest import luigi_config

    runs = tmp_path / "runs"
    runs.mkdir()  # in-process (no command line): the log is written into a runs folder that exists only
    logger = logging.getLogger(LUIGI_LOGGER)
    try:
        raise ValueError("GapFeatures: --shards must be >= 1, got 0\nsecond line")
    except ValueError:
        pasted = traceback.format_exc()
    with luigi_config("bertflow", runs_dir=runs):
        logger.warning("Will not run GapFeatures(shards=0) or any dependencies due to error in complete() "
                       "method:\n%s", pasted)
        try:
            raise FileNotFoundError("textclass: input file not found: no-such.csv")
        except FileNotFoundError:
            logger.exception("Luigi unexpected framework error while scheduling %s", "X")
        logger.warning("Data for X does not exist (yet?).")
    out = capsys.readouterr().out
    log = runs / "logs" / "luigi.log"
    lines = [line.split(" ", 2)[2] for line in out.splitlines()]
    assert lines == [f"error: GapFeatures: --shards must be >= 1, got 0 (traceback: {log})",
                     f"error: textclass: input file not found: no-such.csv (traceback: {log})"]
    # Luigi's handlers get the warning without a traceback only.
    assert [record.getMessage() for record in caplog.records] == ["Data for X does not exist (yet?)."]
    text = log.read_text(encoding="utf-8")
    assert text.count("Traceback (most recent call last):") == 2 and "second line" in text
    assert "Data for X does not exist" in text
