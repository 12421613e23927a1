"""GLUE's metrics equal scikit-learn's / scipy's on random predictions, and the table follows GLUE's rules:
a two-metric task counts as their mean, "w/o WNLI" leaves WNLI out, mean ± sample std and max over seeds."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest

pytestmark = pytest.mark.fast


def scored(task: str, split: str, gold, predicted, labels) -> dict:
    """The official scores the evaluation computes, from textclass's per-text scores (as tasks/glue/evaluate.py)."""
    from tasks.glue.benchmark import TASKS
    from tasks.glue.metrics import official_scores, positive_f1
    from tasks.textclass.metrics import score_classification

    result = score_classification(gold, predicted, labels)
    metrics = dict(result["metrics"])
    if TASKS[task].positive_label in labels:
        metrics["f1"] = positive_f1(result["per_label"], TASKS[task].positive_label)
    return official_scores(TASKS[task], split, metrics)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_equal_scikit_learn(seed):
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    rng = np.random.default_rng(seed)
    gold, predicted = rng.integers(0, 2, 500), rng.integers(0, 2, 500)
    predicted[:300] = gold[:300]  # better than chance, so the figures are not all near zero
    assert scored("cola", "dev", gold, predicted, ["0", "1"]) == {
        "mcc": pytest.approx(100 * matthews_corrcoef(gold, predicted), abs=1e-9)}
    assert scored("mrpc", "dev", gold, predicted, ["0", "1"]) == {
        "f1": pytest.approx(100 * f1_score(gold, predicted), abs=1e-9),
        "accuracy": pytest.approx(100 * accuracy_score(gold, predicted), abs=1e-9)}
    assert scored("qqp", "dev", gold, predicted, ["0", "1"])["f1"] == pytest.approx(100 * f1_score(gold, predicted))
    three_gold, three_predicted = rng.integers(0, 3, 400), rng.integers(0, 3, 400)
    labels = ["contradiction", "entailment", "neutral"]
    assert scored("mnli", "dev_mismatched", three_gold, three_predicted, labels) == {
        "accuracy_mismatched": pytest.approx(100 * accuracy_score(three_gold, three_predicted))}


@pytest.mark.parametrize("seed", [0, 1])
def test_regression_metrics_equal_scipy(seed):
    from scipy.stats import pearsonr, spearmanr

    from tasks.glue.benchmark import TASKS
    from tasks.glue.metrics import official_scores
    from tasks.textclass.metrics import score_regression

    rng = np.random.default_rng(seed)
    gold = np.round(rng.uniform(0, 5, 300), 1)  # ties, as STS-B's scores have
    predicted = gold + rng.normal(0, 1.5, 300)
    found = official_scores(TASKS["stsb"], "dev", score_regression(gold, predicted)["metrics"])
    assert found == {"pearson": pytest.approx(100 * pearsonr(gold, predicted)[0], abs=1e-9),
                     "spearman": pytest.approx(100 * spearmanr(gold, predicted)[0], abs=1e-9)}


def test_averaging_rules():
    from tasks.glue.metrics import glue_averages, task_score
    from tasks.glue.table import reference_rows

    assert task_score("mrpc", {"f1": 90.0, "accuracy": 80.0}) == 85.0
    assert task_score("stsb", {"pearson": 88.0, "spearman": 86.0}) == 87.0
    assert task_score("mnli", {"accuracy_matched": 84.0, "accuracy_mismatched": 82.0}) == 83.0
    assert task_score("mrpc", {"f1": 90.0}) is None
    assert glue_averages({"cola": 50.0, "mrpc": 85.0, "wnli": 20.0}) == {
        "average_without_wnli": 67.5, "average_all": pytest.approx(155.0 / 3)}
    assert glue_averages({"rte": 60.0, "cola": None})["average_all"] is None
    # The write-up's Hugging Face row: its own "average w/o wnli" (81.67) and "all" (78.85) over the nine tasks.
    hf = reference_rows(["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"])[
        "BERT-base, Hugging Face run_glue (dev)"]
    assert hf["average_without_wnli"] == pytest.approx(81.67, abs=0.01)
    assert hf["average_all"] == pytest.approx(78.85, abs=0.01)


def fake_eval(folder, task, split, scores, rows=10):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({
        "glue": {"task": task, "split": split, "scores": scores, "coverage": {"rows": rows, "scored": rows}},
        "train_metrics": {"wall_seconds": 1.0}, "inputs": {"model_dir": None}}))
    return folder


def test_table_mean_std_max_and_averages(tmp_path):
    from tasks.glue.table import build_table, format_markdown

    runs = {("mrpc", 1): {"f1": 80.0, "accuracy": 70.0}, ("mrpc", 2): {"f1": 90.0, "accuracy": 60.0},
            ("wnli", 1): {"accuracy": 50.0}, ("wnli", 2): {"accuracy": 40.0}}
    evals = {key: [fake_eval(tmp_path / f"{key[0]}-{key[1]}", key[0], "dev", scores)]
             for key, scores in runs.items()}
    table = build_table(evals)
    mrpc = table["mean"]["tasks"]["mrpc"]
    assert mrpc["f1"]["mean"] == 85.0 and mrpc["f1"]["std"] == pytest.approx(statistics.stdev([80.0, 90.0]))
    assert mrpc["score"]["mean"] == 75.0  # (75 + 75) / 2
    # Max over seeds: the seed with the best task score, both of its metrics (seed 1 and 2 tie on 75: the first).
    assert table["max"]["tasks"]["mrpc"] == {"f1": 80.0, "accuracy": 70.0, "score": 75.0, "seed": 1}
    assert table["max"]["tasks"]["wnli"]["score"] == 50.0
    assert table["max"]["average_all"] == 62.5 and table["max"]["average_without_wnli"] == 75.0
    # Per seed, then over seeds: seed 1 all = (75 + 50) / 2, seed 2 = (75 + 40) / 2.
    assert table["mean"]["average_all"]["mean"] == pytest.approx((62.5 + 57.5) / 2)
    assert table["mean"]["average_without_wnli"] == {"mean": 75.0, "std": 0.0, "max": 75.0, "n": 2}
    assert table["coverage"] == {"rows": 40, "scored": 40, "share": 1.0}
    markdown = format_markdown(table, "tiny")
    expected = ("| tiny, mean ± std (2 seeds) | 85.0 ± 7.1/65.0 ± 7.1 | 45.0 ± 7.1 | 75.0 ± 0.0 | 60.0 ± 3.5 "
                "| 100% (40/40) |")
    assert expected in markdown
