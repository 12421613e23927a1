"""pipeline.evaluate: ``<Task>Evaluation`` runs eval once into a content-addressed folder with the task's
own settings; ``Evaluation --task X`` is the same evaluation; missing inputs are refused."""

from __future__ import annotations

import json

import luigi
import pytest
from luigi.execution_summary import LuigiStatusCode

from pipeline.evaluate import EVALUATIONS, Evaluation
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
        with pytest.raises(ValueError, match="task gap has no eval setting n_best_size"):  # SQuAD's knob, not GAP's
            Evaluation(**{**params, "n_best_size": 5})
        assert Evaluation(**{**params, "task": "squad"}).out_dir != out
        # The generic entry is the task's own evaluation: the same folder, found done.
        own = EVALUATIONS["gap"](**{k: v for k, v in params.items() if k != "task"})
        assert (own.task_family, own.out_dir) == ("GapEvaluation", out) and own.complete()
        assert build(own).status == LuigiStatusCode.SUCCESS
        assert (out / "manifest.json").stat().st_mtime_ns == stamp

        missing = build(Evaluation(**{**params, "run_dir": str(tmp_path / "no-such-run")}))
        assert missing.status != LuigiStatusCode.SUCCESS


def test_each_task_evaluates_with_its_own_settings_in_the_dag():
    """RACE's eval batch is 16 questions (64 sequences of up to 512 tokens) wherever it runs, never the 64
    rows another task declares; a task's own section or flags change only its evaluations."""
    from pipeline import FullRun, RaceResults

    def batch_sizes() -> dict:
        evals = FullRun(race=True, profile=False).eval_tasks()
        sizes = {name: task.eval_config().batch_size for name, task in evals.items()}
        race = [task.eval_config().batch_size for task in RaceResults(seeds=[1, 2]).eval_tasks().values()]
        return {**sizes, "RaceResults": race, "Evaluation": Evaluation(task="race").eval_config().batch_size}

    assert batch_sizes() == {"gap": 64, "race": 16, "squad": 64, "RaceResults": [16] * 4, "Evaluation": 16}
    with luigi_config("RaceEvaluation", batch_size=4):
        assert batch_sizes() == {"gap": 64, "race": 4, "squad": 64, "RaceResults": [4] * 4, "Evaluation": 4}
        assert Evaluation(task="race", batch_size=8).eval_config().batch_size == 8  # a flag over the section
    with luigi_config("SquadEvaluation", n_best_size=5):
        squad = FullRun(profile=False).eval_tasks()["squad"]
        assert squad.eval_config().n_best_size == 5 and Evaluation(task="squad").eval_config().n_best_size == 5
        assert Evaluation(task="squad").out_dir == squad.clone(finetune=None, test_features=None).out_dir
