"""The GLUE reader on every bundled real file (row counts and label counts as ../shared/data/glue/README.md
gives them, nothing skipped), its errors and skips, and the official files' registry (paths, checksums, a
member fetched out of a zip)."""

from __future__ import annotations

import hashlib
import zipfile
from collections import Counter

import pytest

from tests.conftest import shared_data

pytestmark = pytest.mark.fast

# (task, split): data rows, from the README's table.
ROWS = {
    ("cola", "train"): 8551, ("cola", "dev"): 1043, ("sst2", "train"): 67349, ("sst2", "dev"): 872,
    ("mrpc", "train"): 3668, ("mrpc", "dev"): 408, ("stsb", "train"): 5749, ("stsb", "dev"): 1500,
    ("rte", "train"): 2490, ("rte", "dev"): 277, ("wnli", "train"): 635, ("wnli", "dev"): 71,
    ("qnli", "dev"): 5463,
}
# The README's label distributions of the training files.
LABELS = {"sst2": {"1": 37569, "0": 29780}, "mrpc": {"1": 2474, "0": 1194}, "cola": {"1": 6023, "0": 2528},
          "rte": {"entailment": 1249, "not_entailment": 1241}}


@pytest.mark.parametrize(("task", "split"), sorted(ROWS))
def test_every_bundled_file_reads_whole(task, split):
    from tasks.glue.benchmark import SHA256, TASKS
    from tasks.glue.read import read_glue

    path = shared_data(f"glue/{TASKS[task].member(split)}")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[f"{task}-{split}"]
    examples, skipped, info = read_glue(path, task)
    assert skipped == []
    assert len(examples) == info["rows"] == ROWS[(task, split)]
    assert [example.example_id for example in examples[:3]] == ["0", "1", "2"]
    assert all(example.text.strip() for example in examples)
    if TASKS[task].text_pair is not None:
        assert all(example.text_pair.strip() for example in examples)
    if task == "stsb":
        assert all(0.0 <= example.label <= 5.0 for example in examples) and info["label_type"] == "float"
    elif split == "train" and task in LABELS:
        assert Counter(example.label for example in examples) == LABELS[task]


def test_cola_has_no_header_and_keeps_quotes():
    from tasks.glue.read import read_glue

    examples, _, _ = read_glue(shared_data("glue/CoLA/train.tsv"), "cola")
    first = shared_data("glue/CoLA/train.tsv").read_text(encoding="utf-8").split("\n", 1)[0].split("\t")
    assert (examples[0].text, examples[0].label, examples[0].line) == (first[3], first[1], 1)
    # QUOTE_NONE: quotes are text, read as written (default CSV quoting would join rows of STS-B).
    raw = shared_data("glue/STS-B/train.tsv").read_text(encoding="utf-8").split("\n")[1:]
    examples = read_glue(shared_data("glue/STS-B/train.tsv"), "stsb")[0]
    quoted = [example for example in examples if example.text.startswith('"')]
    assert quoted and all(example.text == raw[example.line - 2].split("\t")[7] for example in quoted)


def test_broken_rows_are_skipped_with_line_and_reason_and_bad_files_are_errors(tmp_path):
    from tasks.glue.read import GlueFormatError, read_glue

    path = tmp_path / "dev.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly three\tentailment\n"
                    "2\ta\t \tentailment\n3\ta\tb\tmaybe\n", encoding="utf-8")
    examples, skipped, info = read_glue(path, "rte")
    assert [example.example_id for example in examples] == ["0"] and info["rows"] == 4
    assert [(s["where"], s["reason"]) for s in skipped] == [
        ("line 3", "3 tab-separated fields, expected 4 (a broken or truncated row)"),
        ("line 4", "empty sentence"),
        ("line 5", "label 'maybe' not in ['entailment', 'not_entailment']")]
    path.write_text("sentence\tlabel\nfine\t1\n", encoding="utf-8")
    with pytest.raises(GlueFormatError, match="no column 'sentence1' for GLUE task rte"):
        read_glue(path, "rte")
    path.write_text("index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                    "0\tg\tf\ty\to\ts\ts\ta\tb\tfive\n", encoding="utf-8")
    assert read_glue(path, "stsb")[1][0]["reason"] == "score 'five' is not a number"
    path.write_bytes(b"sentence\tlabel\n\xff\t1\n")
    with pytest.raises(GlueFormatError, match="line 2: byte 0xff is not UTF-8"):
        read_glue(path, "sst2")


def test_the_registry_resolves_glue_dir_and_fetches_a_member_out_of_a_zip(tmp_path):
    from pipeline.data import configured_path, download
    from tasks.glue.benchmark import official_files
    from tests.conftest import luigi_config

    files = official_files()
    assert files["glue-rte-dev"].url == "https://dl.fbaipublicfiles.com/glue/data/RTE.zip"
    assert files["glue-rte-dev"].member == "RTE/dev.tsv" and files["glue-rte-dev"].filename == "glue/RTE/dev.tsv"
    assert not files["glue-mrpc-train"].downloadable  # built from SentEval's files, no zip
    with luigi_config("inputs", glue_dir=tmp_path / "mine"):
        assert configured_path("glue-rte-dev") == tmp_path / "mine" / "RTE" / "dev.tsv"
    # The download path, offline: a zip served from a file:// URL, its member extracted and verified.
    archive = tmp_path / "RTE.zip"
    with zipfile.ZipFile(archive, "w") as out:
        out.write(shared_data("glue/RTE/dev.tsv"), "RTE/dev.tsv")
        out.writestr("RTE/train.tsv", "not this one")
    local = files["glue-rte-dev"].__class__(**{**files["glue-rte-dev"].__dict__, "url": archive.as_uri()})
    dest = tmp_path / "data" / local.filename
    download(local, dest, timeout_s=5)
    assert dest.read_bytes() == shared_data("glue/RTE/dev.tsv").read_bytes()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["dev.tsv"]  # no archive or part file left
    with pytest.raises(RuntimeError, match="no direct download"):
        download(files["glue-mrpc-dev"], tmp_path / "mrpc-dev.tsv", timeout_s=5)


def test_tasks_flag_parsing_and_tasks_without_recorded_checksums():
    from tasks.glue.suite import parse_members

    assert parse_members("wnli, CoLA,rte") == ["cola", "rte", "wnli"]  # GLUE's column order
    with pytest.raises(ValueError, match="unknown GLUE task"):
        parse_members("cola,sts")
    with pytest.raises(ValueError, match="listed twice"):
        parse_members("rte,rte")
    with pytest.raises(ValueError, match="GLUE qqp, mnli: no official checksums"):
        parse_members("mnli,qqp")
