"""``python -m eval aggregate``: mean / spread over seeds and the probability-averaged ensemble."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from eval.__main__ import main as eval_main
from eval.aggregate import aggregate_runs
from tasks import get_task
from tasks.gap.formats import read_gap_gold, read_submission_csv, write_submission_csv
from tasks.gap.score import score_gap_file
from tests.test_eval_run import gap_run, make_model_dir  # noqa: F401  (gap_run is a fixture)

GAP = get_task("gap").eval


def reseeded_model(src_root, name: str, seed: int, tokenizer_dir):
    """A tiny GAP model like gap_run's, with other head weights and ``seed`` in its train_config."""
    out = make_model_dir(src_root / name, "gap", "multiply", tokenizer_dir)
    generator = torch.Generator().manual_seed(seed)
    head = {k: v + 0.5 * torch.randn(v.shape, generator=generator) if v.ndim else v
            for k, v in load_file(str(out / "head.safetensors")).items()}
    save_file(head, str(out / "head.safetensors"), metadata={"task": "gap", "head": "multiply"})
    config = json.loads((out / "train_config.json").read_text())
    (out / "train_config.json").write_text(json.dumps({**config, "seed": seed}))
    return out


@pytest.fixture(scope="module")
def three_seeds(gap_run, tmp_path_factory, tokenizer_dir):  # noqa: F811
    root = tmp_path_factory.mktemp("seeds")
    runs = []
    for seed in (1, 2, 3):
        model = reseeded_model(root, f"train-{seed}", seed, tokenizer_dir)
        out = root / f"eval-{seed}"
        assert eval_main(["gap", "--model", str(model), "--features", str(gap_run["features"]),
                          "--data", str(gap_run["data"]), "--out", str(out), "--device", "cpu"]) == 0
        runs.append(out)
    return runs


def test_mean_spread_and_ensemble_match_the_single_runs(three_seeds, gap_run, tmp_path):  # noqa: F811
    out = tmp_path / "results" / "gap.md"
    assert eval_main(["aggregate", *map(str, three_seeds), "--by", "head", "--ensemble", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    (group,) = result["groups"]
    assert group["group"] == {"head": "multiply"} and group["seeds"] == [1, 2, 3]
    singles = [json.loads((d / "metrics.json").read_text())["metrics"] for d in three_seeds]
    f1 = [m["f1_overall"] for m in singles]
    assert len(set(f1 + [m["log_loss"] for m in singles])) > 3, "the three models should score differently"
    assert group["metrics"]["f1_overall"]["mean"] == pytest.approx(statistics.fmean(f1))
    assert group["metrics"]["f1_overall"]["std"] == pytest.approx(statistics.stdev(f1))
    assert group["metrics"]["log_loss"]["max"] == max(m["log_loss"] for m in singles)

    gold_ids = [row.example_id for row in read_gap_gold(gap_run["data"])]
    averaged = np.mean([read_submission_csv(d / "submission.csv", gold_ids) for d in three_seeds], axis=0)
    write_submission_csv(tmp_path / "avg.csv", gold_ids, averaged)
    expected = score_gap_file(gap_run["data"], tmp_path / "avg.csv")
    assert group["ensemble"]["log_loss"] == pytest.approx(expected["log_loss"], rel=1e-9)
    assert group["ensemble"]["f1_overall"] == pytest.approx(expected["f1_overall"])

    table = out.read_text()
    assert "| multiply | 3 | 1,2,3 |" in table and "| multiply | ensemble | all |" in table
    assert [run["seed"] for run in result["runs"]] == [1, 2, 3]
    assert all(len(run["head_sha256"]) == 64 for run in result["runs"])


def test_the_same_seed_twice_or_two_tasks_is_an_error(three_seeds, capsys):
    with pytest.raises(ValueError, match="same seed"):
        aggregate_runs([three_seeds[0], three_seeds[0]], GAP)
    with pytest.raises(ValueError, match="no \\['warmup'\\] to group by"):
        aggregate_runs(three_seeds, GAP, by=("warmup",))
    assert eval_main(["aggregate", str(three_seeds[0]) + "-missing"]) == 1
    assert "not a finished evaluation" in capsys.readouterr().err
