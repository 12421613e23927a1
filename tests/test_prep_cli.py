"""Every task's prep command (``python -m prep <task>``, derived from its PrepSpec) on a slice of its real data:
features written and summarised, bad input one error line (exit 1), a bad setting a usage error (exit 2)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from prep.__main__ import main as prep_main
from tests.conftest import shared_data


def slice_lines(src, dst, lines: int):
    dst.write_text("".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:lines]), encoding="utf-8")
    return dst


def squad_slice(tmp_path):
    payload = json.loads(shared_data("squad/dev-v1.1.json").read_text(encoding="utf-8"))
    article = payload["data"][0]
    payload["data"] = [{**article, "paragraphs": article["paragraphs"][:2]}]
    (tmp_path / "in.json").write_text(json.dumps(payload), encoding="utf-8")
    return tmp_path / "in.json", payload["data"][0]["paragraphs"][0]["qas"][0]["id"]


# task name, input maker (tmp_path -> path), the task's own flags, its chunk-size flag, the summary's start
CASES = {
    "gap": ("gap", lambda tmp: slice_lines(shared_data("gap/gap-test.tsv"), tmp / "gap-test.tsv", 9),
            [], "--rows-per-chunk", "GAP test: 8 features from 8/8 rows"),
    "squad": ("squad", lambda tmp: squad_slice(tmp)[0], [], "--contexts-per-chunk", "55 features from 55/55 questions"),
    "race": ("race", lambda tmp: slice_lines(shared_data("race/dev.jsonl"), tmp / "dev.jsonl", 2),
             [], "--articles-per-chunk", "RACE"),
    "glue": ("glue", lambda tmp: slice_lines(shared_data("glue/RTE/dev.tsv"), tmp / "dev.tsv", 9),
             ["--glue-task", "rte"], None, "glue rte rte-dev: 8 features from 8/8 rows"),
    "textclass": ("textclass",
                  lambda tmp: slice_lines(shared_data("textclass/bbc-news/train.csv"), tmp / "bbc.csv", 9),
                  ["--text-column", "Text", "--label-column", "Category", "--id-column", "ArticleId"],
                  "--rows-per-chunk", "textclass bbc: 31 windows from 8/8 texts (5 labels)"),
}


@pytest.mark.parametrize("name", CASES)
def test_prep_command_writes_features_and_refuses_bad_input(name, tmp_path, capsys):
    task, make_input, extra, chunk_flag, summary_start = CASES[name]

    def main(argv):
        return prep_main([task, *argv])

    source = make_input(tmp_path)
    assert main([str(source), str(tmp_path / "out"), "--nproc", "1", "--quiet", *extra]) == 0
    summary = capsys.readouterr().out
    assert summary.startswith(summary_start) and str(tmp_path / "out") in summary
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["nproc"] == 1 and manifest["counts"]["features_out"] > 0

    # A missing input: one line naming it, exit 1, no traceback, no output folder.
    assert main([str(tmp_path / "missing.txt"), str(tmp_path / "none"), "--quiet", *extra]) == 1
    err = capsys.readouterr().err
    assert "error:" in err and "missing.txt" in err and "Traceback" not in err and not (tmp_path / "none").exists()

    # A bad setting is a usage error before any work.
    with pytest.raises(SystemExit) as exit_info:
        main([str(source), str(tmp_path / "none"), "--max-seq-length", "2", *extra])
    assert exit_info.value.code == 2
    if chunk_flag:
        with pytest.raises(SystemExit) as exit_info:
            main([str(source), str(tmp_path / "none"), chunk_flag, "0", *extra])
        assert exit_info.value.code == 2 and f"{chunk_flag} must be >= 1" in capsys.readouterr().err


@pytest.mark.fast
@pytest.mark.parametrize("name", CASES)
def test_prep_command_has_a_flag_per_config_field_with_its_default(name, capsys):
    """The command is derived: every prep config field is a flag, shown with the dataclass default."""
    from tasks import get_task

    config = get_task(name).prep.config
    with pytest.raises(SystemExit):
        prep_main([name, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(config):
        assert "--" + field.name.replace("_", "-") in text, field.name
        if field.default is not dataclasses.MISSING and field.default is not None:
            assert f"(default: {field.default})" in text or "(default: False)" in text, field.name
