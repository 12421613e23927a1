"""pipeline.evaluate.Evaluation: runs eval once into a content-addressed folder; refuses missing inputs."""

from __future__ import annotations

import json

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from pipeline.evaluate import Evaluation
from tests.conftest import luigi_config, shared_data
from tests.test_eval_run import make_model_dir

pytestmark = pytest.mark.fast


def runs_dir(path):
    return luigi_config("bertflow", runs_dir=path)


def build(task):
    return luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")


def test_evaluation_task_runs_once(tmp_path, tokenizer_dir):
    from tasks.gap.prep import GapPrepConfig, prepare_gap

    lines = shared_data("gap/gap-validation.tsv").read_text(encoding="utf-8").splitlines()
    data = tmp_path / "gap-small.tsv"
    data.write_text("\n".join(lines[:21]) + "\n", encoding="utf-8")
    prepare_gap(data, tmp_path / "features", tokenizer_dir, GapPrepConfig(max_seq_length=128), nproc=1, mode="merge")
    model = make_model_dir(tmp_path / "train", "gap", "concat", tokenizer_dir)
    params = dict(task="gap", run_dir=str(model), features_dir=str(tmp_path / "features"), input=str(data),
                  device="cpu")
    with runs_dir(tmp_path / "runs"):
        task = Evaluation(**params)
        result = build(task)
        assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
        out = task.out_dir
        assert out.parent == tmp_path / "runs" / "eval" and out.name.startswith("gap-")
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["counts"]["examples"] == 20
        assert {"submission.csv", "gap_predictions.tsv", "report.md"} <= {p.name for p in out.iterdir()}
        stamp = (out / "manifest.json").stat().st_mtime_ns

        # batch size and device only change speed: same folder, nothing re-runs
        again = build(Evaluation(**{**params, "batch_size": 3}))
        assert again.status == LuigiStatusCode.SUCCESS
        assert (out / "manifest.json").stat().st_mtime_ns == stamp
        assert Evaluation(**{**params, "n_best_size": 5}).out_dir == out  # SQuAD knobs: not GAP's
        assert Evaluation(**{**params, "task": "squad"}).out_dir != out

        missing = build(Evaluation(**{**params, "run_dir": str(tmp_path / "no-such-run")}))
        assert missing.status != LuigiStatusCode.SUCCESS
