"""TextClassification end to end on a tiny model and a slice of the real BBC file: split -> features
-> fine-tune -> evaluate, cached; a new seed or file re-runs what depends on it."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import luigi
import pytest
from luigi.cmdline_parser import CmdlineParser
from luigi.execution_summary import LuigiStatusCode

from tests.conftest import shared_data
from tests.test_pipeline_fullrun import STARTED, configured


def slice_bbc(dst: Path, rows: int) -> Path:
    with open(shared_data("textclass/bbc-news/train.csv"), newline="", encoding="utf-8") as handle:
        records = list(csv.reader(handle))
    with open(dst, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(records[: rows + 1])
    return dst


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_encoder_dir_dropout):
    root = tmp_path_factory.mktemp("textclass")
    data = slice_bbc(root / "bbc.csv", 100)
    model = tiny_encoder_dir_dropout
    config = {
        "bertflow": {"runs_dir": root / "runs"},
        "TextclassFeatures": {"max_seq_length": 64},
        "TextclassFineTuned": {"max_steps": 3, "epochs": 1, "global_batch_size": 8, "device": "cpu",
                               "select_best": "true"},
        "TextclassEvaluation": {"device": "cpu"},
    }
    return root, data, model, config


def build(task) -> list[str]:
    STARTED.clear()
    result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
    assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
    return sorted(STARTED)


def test_text_classification_runs_caches_and_reruns_what_changed(setup, monkeypatch):
    from transformers import AutoModelForSequenceClassification

    from pipeline import TextClassification

    root, data, model, config = setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    params = dict(data=str(data), text_column="Text", label_column="Category", id_column="ArticleId",
                  model_dir=str(model), nproc=1)
    with configured(config):
        started = build(TextClassification(**params))
        assert started == ["Splits", "TextClassification", "TextclassEvaluation", "TextclassFeatures",
                           "TextclassFeatures", "TextclassFeatures", "TextclassFineTuned"]
        summary = Path(TextClassification(**params).output().path)
        assert "| textclass | accuracy |" in summary.read_text()
        [evaluation] = (root / "runs" / "eval").glob("textclass-*")
        metrics = json.loads((evaluation / "metrics.json").read_text())
        [split] = (root / "runs" / "splits").glob("textclass-*")
        split_manifest = json.loads((split / "manifest.json").read_text())
        # Every test text is scored, per text (not per window).
        assert metrics["counts"]["texts"] == split_manifest["counts"]["test"]["texts"] > 0
        assert 0.0 <= metrics["metrics"]["accuracy"] <= 1.0
        rows = list(csv.DictReader(open(evaluation / "test_predictions.csv", encoding="utf-8")))
        assert len(rows) == metrics["counts"]["texts"]
        labels = split_manifest["labels"]
        assert sorted(labels) == ["business", "entertainment", "politics", "sport", "tech"]
        assert {f"p_{label}" for label in labels} <= set(rows[0])
        # The fine-tuned folder is an ordinary Hugging Face sequence classifier with named labels.
        [run] = (root / "runs").glob("finetune-textclass-linear-*")
        loaded, info = AutoModelForSequenceClassification.from_pretrained(run / "model", output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"]
        assert [loaded.config.id2label[i] for i in range(len(labels))] == labels

        # The same file and settings: nothing runs.
        assert build(TextClassification(**params)) == []
        # A new split seed gives new splits, so everything after them runs again.
        started = build(TextClassification(**params, split_seed=7))
        assert started == ["Splits", "TextClassification", "TextclassEvaluation", "TextclassFeatures",
                           "TextclassFeatures", "TextclassFeatures", "TextclassFineTuned"]

        # The folding flags as a user types them: --no-fold truncates (new features, the same splits) and
        # --fold-pool max scores the texts anew.
        argv = ["TextClassification", "--data", str(data), "--text-column", "Text", "--label-column", "Category",
                "--id-column", "ArticleId", "--model-dir", str(model), "--nproc", "1", "--no-fold",
                "--fold-pool", "max"]
        with CmdlineParser.global_instance(argv) as parser:
            flagged = parser.get_task_obj()
        assert build(flagged) == ["TextClassification", "TextclassEvaluation", "TextclassFeatures",
                                  "TextclassFeatures", "TextclassFeatures", "TextclassFineTuned"]
        features = flagged.artifacts()["features"]
        for folder in features.values():
            manifest = json.loads((folder / "manifest.json").read_text())
            assert manifest["config"]["fold"] is False
            counts = manifest["counts"]
            assert counts["features_out"] == counts["texts_truncated"] == counts["examples_in"] > 0  # a window a text
        eval_dir = flagged.artifacts()["evals"]["textclass"]
        assert flagged.requires().eval_config().fold_pool == "max"
        assert eval_dir.name != evaluation.name
    # The luigi.cfg spelling builds the same features (found, not rebuilt); the fine-tune's name includes the
    # features parameters as given, so that spelling trains once under its own name.
    with configured({**config, "TextclassFeatures": {**config["TextclassFeatures"], "fold": "false"},
                     "TextclassEvaluation": {**config["TextclassEvaluation"], "fold_pool": "max"}}):
        assert build(TextClassification(**params)) == ["TextClassification", "TextclassEvaluation",
                                                       "TextclassFineTuned"]
    with pytest.raises(ValueError, match="--fold-stride needs folding"):
        TextClassification(**params, no_fold=True, fold_stride=16).requires()


def test_missing_input_file_is_a_clear_error(setup):
    from pipeline import TextClassification

    root, _, model, config = setup
    with configured(config), pytest.raises(FileNotFoundError, match="input file not found: .*no-such.csv"):
        TextClassification(data=str(root / "no-such.csv"), model_dir=str(model)).requires()


def test_already_split_files_are_taken_as_they_are(setup, tmp_path):
    """--validation-data / --test-data: those files become the splits; only training data is read from --data."""
    from pipeline import Splits
    from tasks.textclass.userdata import TextClassSplitConfig

    root, data, _, config = setup
    rows = list(csv.reader(open(data, newline="", encoding="utf-8")))
    parts = {"train": rows[1:61], "validation": rows[61:81], "test": rows[81:101]}
    files = {}
    for name, part in parts.items():
        files[name] = tmp_path / f"{name}.csv"
        with open(files[name], "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows([rows[0], *part])
    split_config = TextClassSplitConfig(data=str(files["train"]), text_column="Text", label_column="Category",
                                        id_column="ArticleId", validation_data=str(files["validation"]),
                                        test_data=str(files["test"]))
    with configured(config):
        task = Splits(task="textclass", config=dataclasses.asdict(split_config))
        luigi.build([task], local_scheduler=True, log_level="WARNING")
        manifest = json.loads(Path(task.output().path).read_text())
        test_ids = [json.loads(line)["id"] for line in open(task.split_path("test"), encoding="utf-8")]
    assert {name: counts["texts"] for name, counts in manifest["counts"].items()} == {
        "train": 60, "validation": 20, "test": 20}
    assert test_ids == [row[0] for row in parts["test"]]


def with_bad_rows(data: Path, dst: Path) -> tuple[Path, list[tuple[int, str]]]:
    """``data`` plus a row without a label and a row with a blank text (issue 27, 3): 102 rows, 100 usable."""
    rows = list(csv.reader(open(data, newline="", encoding="utf-8")))
    header = rows[0]
    no_label = [f"9{i}" if name == "ArticleId" else "" if name == "Category" else "a text without a label"
                for i, name in enumerate(header)]
    blank = ["9999" if name == "ArticleId" else "  " if name == "Text" else "sport" for name in header]
    with open(dst, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([header, *rows[1:51], no_label, *rows[51:], blank])
    return dst, [(52, "missing label"), (len(rows) + 2, "empty text")]


@pytest.mark.fast
def test_rows_left_out_of_the_split_are_listed_in_its_manifest(tmp_path):
    """The splits' manifest counts and lists (file, line, reason) the rows the read left out."""
    from pipeline import Splits
    from tasks.textclass.userdata import TextClassSplitConfig

    bad, expected = with_bad_rows(slice_bbc(tmp_path / "bbc.csv", 100), tmp_path / "bad-cells.csv")
    split_config = TextClassSplitConfig(data=str(bad), text_column="Text", label_column="Category")
    with configured({"bertflow": {"runs_dir": tmp_path / "runs"}}):
        task = Splits(task="textclass", config=dataclasses.asdict(split_config))
        result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
        assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
        manifest = json.loads(Path(task.output().path).read_text())
    assert sum(counts["texts"] for counts in manifest["counts"].values()) == 100
    assert manifest["rows_skipped"] == 2 and manifest["skip_reasons"] == {"missing label": 1, "empty text": 1}
    assert [(s["file"], s["where"], s["reason"]) for s in manifest["skipped"]] == [
        (str(bad), f"line {line}", reason) for line, reason in expected]


def test_text_classification_on_parquet_lists_the_rows_it_left_out(setup, monkeypatch, tmp_path):
    """--data x.parquet end to end; a blank text and a null label are counted and listed in the splits'
    manifest and in the run summary (issue 26 Parquet; issue 27, 3)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from pipeline import TextClassification

    root, data, model, config = setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    rows = list(csv.DictReader(open(data, newline="", encoding="utf-8")))
    texts = [row["Text"] for row in rows] + ["   ", "a text without a label"]
    labels = [row["Category"] for row in rows] + ["sport", None]
    path = tmp_path / "bbc.parquet"
    pq.write_table(pa.table({"id": pa.array(range(1, len(texts) + 1), pa.int64()), "body": texts, "topic": labels}),
                   path)
    task = TextClassification(data=str(path), text_column="body", label_column="topic", id_column="id",
                              model_dir=str(model), nproc=1)
    with configured(config):
        build(task)
        [split] = [folder for folder in (root / "runs" / "splits").glob("textclass-*")
                   if json.loads((folder / "manifest.json").read_text())["input"]["path"] == str(path.resolve())]
        summary = Path(task.output().path).read_text()
    manifest = json.loads((split / "manifest.json").read_text())
    assert sum(counts["texts"] for counts in manifest["counts"].values()) == 100
    assert [(s["example_id"], s["where"], s["reason"]) for s in manifest["skipped"]] == [
        ("101", "row 101", "empty text"), ("102", "row 102", "missing label")]
    assert "## Rows left out" in summary and "2 rows: 2 in textclass splits" in summary
    assert "| textclass splits | bbc.parquet | row 101 | 101 | empty text |" in summary
    assert "| textclass splits | bbc.parquet | row 102 | 102 | missing label |" in summary


@pytest.mark.fast
def test_one_class_data_is_refused_before_training(tmp_path):
    """One label in the whole file used to train to loss 0 and fail at evaluation (issue 27, 2): Splits
    now refuses it, naming the file and column, and nothing after it starts."""
    from pipeline import TextClassification
    from tasks.textclass.split import UntrainableDataError
    from tasks.textclass.userdata import TextClassSplitConfig, write_user_splits

    data = tmp_path / "sport.csv"
    with open(data, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([["text", "label"]] + [[f"match report {i}", "sport"] for i in range(30)])
    with pytest.raises(UntrainableDataError, match=r"sport.csv: column 'label': the training split has one class only, "
                                                   r"'sport' \(24 texts\)"):
        write_user_splits(TextClassSplitConfig(data=str(data)), tmp_path / "splits")
    assert not (tmp_path / "splits").exists()
    STARTED.clear()
    with configured({"bertflow": {"runs_dir": tmp_path / "runs"}}):
        result = luigi.build([TextClassification(data=str(data), nproc=1)], local_scheduler=True,
                             detailed_summary=True, log_level="WARNING")
    assert result.status == LuigiStatusCode.FAILED and STARTED == ["Splits"]
    assert not list((tmp_path / "runs").glob("finetune-*")) and not (tmp_path / "runs" / "splits").exists()
