"""GlueResults end to end on a tiny model and slices of the real GLUE files: every task x seed is a cached
fine-tune and evaluation, a third seed runs only that seed, the table follows GLUE's rules; a dev file with a
broken row is a coverage error naming the line."""

from __future__ import annotations

from tasks import get_task
import json
from pathlib import Path

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from tests.conftest import shared_data
from tests.test_pipeline_fullrun import STARTED, configured
from tests.test_textclass_pipeline import build

TASKS = {"wnli": "WNLI", "stsb": "STS-B"}  # a classification and the regression task, both small
FAILURES: list[tuple[str, BaseException]] = []


@luigi.Task.event_handler(luigi.Event.FAILURE)
def _record_failure(task, exception):
    FAILURES.append((task.task_family, exception))


def slice_glue(root: Path, folder: str, rows: dict[str, int]) -> None:
    for split, count in rows.items():
        lines = shared_data(f"glue/{folder}/{split}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / f"{split}.tsv").write_text("".join(lines[: count + 1]), encoding="utf-8")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_encoder_dir_dropout):
    root = tmp_path_factory.mktemp("glue")
    for folder in TASKS.values():
        slice_glue(root / "glue", folder, {"train": 24, "dev": 12})
    model = tiny_encoder_dir_dropout
    config = {
        "bertflow": {"runs_dir": root / "runs"},
        "inputs": {"glue_dir": root / "glue"},
        "GlueFineTuned": {"epochs": 1, "global_batch_size": 8, "device": "cpu", "save_every_n_steps": 0},
        "GlueFineTuned.stsb": {"max_steps": 2, "lr": 1e-4},
        "GlueFeatures": {"max_seq_length": 32},
        "GlueEvaluation": {"device": "cpu"},
    }
    return root, model, config


def test_glue_results_two_tasks_two_seeds_then_a_third_seed_runs_only_that_seed(setup, monkeypatch):
    from pipeline import GlueResults

    root, model, config = setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    params = dict(tasks="wnli,stsb", model_dir=str(model), nproc=1)
    with configured(config):
        started = build(GlueResults(seeds=2, **params))
        assert started.count("GlueFineTuned") == 4 and started.count("GlueEvaluation") == 4
        assert started.count("GlueFeatures") == 4  # train + dev per task, shared by the seeds
        out = Path(GlueResults(seeds=2, **params).output().path)
        table = json.loads(out.with_suffix(".json").read_text())
        assert table["tasks"] == ["stsb", "wnli"] and table["seeds"] == [1, 2]
        assert table["coverage"] == {"rows": 2 * 2 * 12, "scored": 2 * 2 * 12, "share": 1.0}
        assert out.with_suffix(".png").stat().st_size > 0
        # The stsb recipe section reached its fine-tunes only.
        configs = {json.loads((Path(r["run_dir"]) / "train_config.json").read_text())["max_steps"]
                   for r in table["runs"] if r["task"] == "stsb"}
        assert configs == {2}
        for record in table["runs"]:
            scores = record["scores"]
            expected = (scores["pearson"] + scores["spearman"]) / 2 if record["task"] == "stsb" else scores["accuracy"]
            assert record["score"] == pytest.approx(expected)
            assert set(scores) == ({"pearson", "spearman"} if record["task"] == "stsb" else {"accuracy"})
        per_seed = table["per_seed"]["1"]
        stsb, wnli = (table["runs"][0]["score"], table["runs"][2]["score"])
        assert per_seed["average_all"] == pytest.approx((stsb + wnli) / 2)
        assert per_seed["average_without_wnli"] == pytest.approx(stsb)
        markdown = out.read_text()
        assert "BERT-base, Hugging Face run_glue (dev)" in markdown and "100% (48/48)" in markdown

        assert build(GlueResults(seeds=2, **params)) == []  # cached: nothing runs again
        # --model is the same as --model-dir (the spelling): the same cells, nothing runs.
        alias = GlueResults(seeds=2, tasks="wnli,stsb", model=str(model), nproc=1)
        assert alias.output().path == str(out) and build(alias) == []
        with pytest.raises(ValueError, match="differ; give one"):
            GlueResults(seeds=2, tasks="wnli", model=str(model), model_dir=str(root)).encoder_dir()
        # A run stopped early: the finished cells' table, the third seed marked not run (nothing trains).
        from pipeline.suite import write_finished

        assert write_finished(GlueResults(seeds=3, **params), root / "partial") == [("stsb", 3), ("wnli", 3)]
        partial = (root / "partial" / "glue.md").read_text()
        assert "Not run (the run was stopped at its deadline): stsb seed 3, wnli seed 3" in partial
        started = build(GlueResults(seeds=3, **params))
        assert started.count("GlueFineTuned") == 2 and started.count("GlueEvaluation") == 2  # seed 3 of each task
        assert "GlueFeatures" not in started
        table = json.loads(Path(GlueResults(seeds=3, **params).output().path).with_suffix(".json").read_text())
        assert table["seeds"] == [1, 2, 3] and table["mean"]["tasks"]["wnli"]["score"]["n"] == 3

    # eval aggregate and compare take GLUE evaluations like any task's: the GLUE score leads.
    from eval.aggregate import aggregate_runs
    from eval.compare import comparison_rows

    wnli = [Path(folder) for r in table["runs"] if r["task"] == "wnli" for folder in r["eval_dirs"]]
    [group] = aggregate_runs(wnli, get_task("glue").eval)["groups"]
    assert group["seeds"] == [1, 2, 3]
    assert group["metrics"]["glue_score"]["mean"] == pytest.approx(table["mean"]["tasks"]["wnli"]["score"]["mean"])
    rows = comparison_rows(wnli[:2], {"glue": get_task("glue").eval})
    assert [row["GLUE score"] for row in rows] == pytest.approx([r["score"] for r in table["runs"][3:5]])


def test_a_broken_dev_row_is_a_coverage_error_naming_its_line(setup, monkeypatch, tmp_path):
    from pipeline import GlueResults

    root, model, config = setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    slice_glue(tmp_path / "glue", "WNLI", {"train": 24, "dev": 12})
    dev = tmp_path / "glue" / "WNLI" / "dev.tsv"
    lines = dev.read_text(encoding="utf-8").splitlines(keepends=True)
    lines[5] = lines[5].replace("\t", " ", 1)  # a row that lost a tab: 3 fields, not 4
    dev.write_text("".join(lines), encoding="utf-8")
    broken = {**config, "inputs": {"glue_dir": tmp_path / "glue"}}
    with configured(broken):
        FAILURES.clear()
        result = luigi.build([GlueResults(tasks="wnli", seeds=1, model_dir=str(model), nproc=1)],
                             local_scheduler=True, detailed_summary=True, log_level="WARNING")
    assert result.status != LuigiStatusCode.SUCCESS
    [(family, error)] = FAILURES
    assert family == "GlueEvaluation"
    assert "coverage 91.67% (11 of 12 rows)" in str(error)
    assert "line 6: 3 tab-separated fields, expected 4" in str(error)  # lines[5]: line 1 is the header
