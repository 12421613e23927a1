"""Text classification scoring: metrics equal scikit-learn's, window pooling, every text scored, files, report.

scikit-learn (and scipy, which it brings) is a test-only dependency: the reference the numpy metrics
are checked against.
"""

from __future__ import annotations

from tasks import get_task
import csv
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from scipy import stats
from sklearn import metrics as sklearn_metrics

from prep.features import open_features
from tasks.spec import EvalContext
from train.testing import write_feature_dir
from tasks.textclass import metrics as M
from tasks.textclass.evaluate import (
    PREDICTIONS_FILE,
    GoldText,
    TextClassEvalConfig,
    evaluate,
    evaluate_textclass,
    pool_windows,
    read_gold,
)
from tasks.textclass.read import SKIP_UNKNOWN_LABEL
from tasks.textclass.report import CONFUSION_PNG, REGRESSION_PNG, headline, metric_rows, report_sections
from tasks.textclass.score import ensemble, score_textclass_file

pytestmark = pytest.mark.fast

MARKER = 1000  # a window's logit for class k is how often token MARKER + k occurs in it
LABELS = ["a", "b", "c"]


class MarkerModel(torch.nn.Module):
    """Stand-in classifier: logits [B, K] = counts of each class's marker token (padding ignored)."""

    def __init__(self, num_labels: int, labels=None):
        super().__init__()
        self.num_labels = num_labels
        if labels is not None:
            self.labels = tuple(labels)

    def forward(self, input_ids, attention_mask, token_type_ids=None, **extra):
        real = attention_mask.bool()
        return torch.stack([((input_ids == MARKER + k) & real).sum(dim=1) for k in range(self.num_labels)], 1).float()


def _windows(texts: list[tuple[str, object, list[list[int]]]], regression: bool = False) -> pa.Table:
    """A feature table in the contract schema from (example_id, label, [window marker lists])."""
    rows = {name: [] for name in ("feature_id", "example_id", "example_index", "input_ids", "token_type_ids",
                                  "label", "window_index", "num_windows")}
    for index, (example_id, label, windows) in enumerate(texts):
        for w, markers in enumerate(windows):
            ids = [101, *[MARKER + k for k in markers], 2000, 102]
            rows["feature_id"].append(len(rows["feature_id"]))
            rows["example_id"].append(example_id)
            rows["example_index"].append(index)
            rows["input_ids"].append(ids)
            rows["token_type_ids"].append([0] * len(ids))
            rows["label"].append(label)
            rows["window_index"].append(w)
            rows["num_windows"].append(len(windows))
    schema = pa.schema([("feature_id", pa.int64()), ("example_id", pa.string()), ("example_index", pa.int32()),
                        ("input_ids", pa.list_(pa.int32())), ("token_type_ids", pa.list_(pa.int8())),
                        ("label", pa.float32() if regression else pa.int32()), ("window_index", pa.int16()),
                        ("num_windows", pa.int16())])
    return pa.table(rows, schema=schema)


# t2's windows disagree: mean of logits says "a" (b: 4/3, a: 2), max says "b" (b: 4, a: 3).
FIXTURE = [
    ("t1", 0, [[0, 0]]),  # a, one window: right
    ("t2", 1, [[1, 1, 1, 1], [0, 0, 0], [0, 0, 0]]),  # b, three windows: wrong under mean, right under max
    ("t3", 2, [[2, 2], [2]]),  # c, two windows: right
    ("t6", 1, [[1]]),  # b: right
]
# id, text, label as the data file holds them; t4 has an empty text, t5 a label never seen in training
DATA = [("t1", "one", "a"), ("t2", "two", "b"), ("t3", "three", "c"), ("t4", "", "a"), ("t5", "five", "d"),
        ("t6", "six", "b")]
SKIPPED = [{"example_id": "t4", "reason": "empty text", "where": "line 4"},
           {"example_id": "t5", "reason": SKIP_UNKNOWN_LABEL, "where": "line 5"}]
GOLD = [GoldText("t1", "a", 1), GoldText("t2", "b", 2), GoldText("t3", "c", 3), GoldText("t4", None, 4, "empty text"),
        GoldText("t5", "d", 5), GoldText("t6", "b", 6)]


def _evaluate(pool="mean", gold=GOLD, table=None, model=None, labels=LABELS):
    return evaluate_textclass(model or MarkerModel(3), table if table is not None else _windows(FIXTURE), gold,
                              labels, "str", TextClassEvalConfig(batch_size=2, fold_pool=pool), skipped=SKIPPED)


def _random_pairs(seed: int, n: int = 300, k: int = 4, sentinels: bool = True):
    rng = np.random.default_rng(seed)
    gold, predicted = rng.integers(0, k, n), rng.integers(0, k, n)
    if sentinels:
        gold[rng.random(n) < 0.08] = M.OUTSIDE_LABELS
        predicted[rng.random(n) < 0.08] = M.NO_PREDICTION
    return gold, predicted


# ---------------------------------------------------------------------------------------------
# metrics against scikit-learn / scipy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed,sentinels", [(0, False), (1, True), (2, True), (3, False)])
def test_classification_metrics_equal_sklearn(seed, sentinels):
    k = 4
    gold, predicted = _random_pairs(seed, k=k, sentinels=sentinels)
    labels = list(range(k))
    scored = M.score_classification(gold, predicted, ["w", "x", "y", "z"])
    metrics = scored["metrics"]
    assert metrics["accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(gold, predicted), abs=1e-12)
    precision, recall, f1, support = sklearn_metrics.precision_recall_fscore_support(
        gold, predicted, labels=labels, zero_division=0)
    np.testing.assert_allclose([r["precision"] for r in scored["per_label"]], precision, atol=1e-12)
    np.testing.assert_allclose([r["recall"] for r in scored["per_label"]], recall, atol=1e-12)
    np.testing.assert_allclose([r["f1"] for r in scored["per_label"]], f1, atol=1e-12)
    assert [r["support"] for r in scored["per_label"]] == support.tolist()
    for average in ("macro", "weighted"):
        expected = sklearn_metrics.f1_score(gold, predicted, labels=labels, average=average, zero_division=0)
        assert metrics[f"{average}_f1"] == pytest.approx(expected, abs=1e-12)
    assert metrics["mcc"] == pytest.approx(sklearn_metrics.matthews_corrcoef(gold, predicted), abs=1e-12)
    expected_matrix = sklearn_metrics.confusion_matrix(gold, predicted, labels=labels)
    assert scored["confusion_matrix"]["matrix"] == expected_matrix.tolist()
    assert metrics["texts"] == len(gold)
    assert metrics["texts_without_prediction"] == int((predicted == M.NO_PREDICTION).sum())


def test_metric_edge_cases_equal_sklearn():
    # one class predicted for all: MCC undefined -> 0; a label never predicted: precision 0, not NaN
    gold, predicted = np.array([0, 1, 2, 1]), np.array([1, 1, 1, 1])
    assert M.matthews_corrcoef(gold, predicted) == sklearn_metrics.matthews_corrcoef(gold, predicted) == 0.0
    assert M.matthews_corrcoef([0, 1, 1, 0], [0, 1, 1, 0]) == pytest.approx(1.0)
    assert M.matthews_corrcoef([0, 1, 1, 0], [1, 0, 0, 1]) == pytest.approx(-1.0)
    scores = M.per_label_scores(gold, predicted, 3)
    assert scores["precision"].tolist() == [0.0, 0.5, 0.0]
    with pytest.raises(ValueError):
        M.accuracy([0, 1], [0])


def test_regression_metrics_equal_scipy():
    rng = np.random.default_rng(5)
    gold = np.round(rng.normal(size=80), 1)  # rounded: ties, for the average ranks
    predicted = np.round(gold + rng.normal(scale=0.7, size=80), 1)
    np.testing.assert_allclose(M.average_ranks(gold), stats.rankdata(gold), atol=1e-12)
    scored = M.score_regression(gold, predicted)["metrics"]
    assert scored["pearson"] == pytest.approx(stats.pearsonr(gold, predicted)[0], abs=1e-12)
    assert scored["spearman"] == pytest.approx(stats.spearmanr(gold, predicted)[0], abs=1e-12)
    assert scored["mse"] == pytest.approx(sklearn_metrics.mean_squared_error(gold, predicted), abs=1e-12)
    assert M.pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # constant side: undefined, not NaN


# ---------------------------------------------------------------------------------------------
# windows -> texts
# ---------------------------------------------------------------------------------------------


def test_pool_windows_mean_and_max():
    logits = np.array([[4.0, 0.0], [0.0, 3.0], [0.0, 3.0], [1.0, 2.0]])
    mean = pool_windows(["x", "x", "x", "y"], logits, "mean")
    peak = pool_windows(["x", "x", "x", "y"], logits, "max")
    np.testing.assert_allclose(mean["x"][0], [4 / 3, 2.0])
    np.testing.assert_allclose(peak["x"][0], [4.0, 3.0])
    assert int(np.argmax(mean["x"][0])) == 1 and int(np.argmax(peak["x"][0])) == 0
    assert mean["x"][1] == 3 and mean["y"][1] == 1
    np.testing.assert_allclose(mean["y"][0], peak["y"][0])  # one window: pooling changes nothing
    with pytest.raises(ValueError, match="fold_pool"):
        TextClassEvalConfig(fold_pool="median")


def test_per_text_scores_pool_windows_and_count_every_text():
    mean, peak = _evaluate("mean"), _evaluate("max")
    predictions = {pool: {row[0]: row[2] for row in r.rows} for pool, r in (("mean", mean), ("max", peak))}
    assert predictions["mean"] == {"t1": "a", "t2": "a", "t3": "c", "t4": None, "t5": None, "t6": "b"}
    assert predictions["max"]["t2"] == "b"
    # six texts of the file: t4 (empty text) and t5 (unseen label) have no prediction and count as wrong
    assert mean.metrics["accuracy"] == pytest.approx(3 / 6)
    assert peak.metrics["accuracy"] == pytest.approx(4 / 6)
    # windows are scored one by one whatever the pooling: t1 1/1, t2 1/3, t3 2/2, t6 1/1
    assert mean.metrics["window_accuracy"] == peak.metrics["window_accuracy"] == pytest.approx(5 / 7)
    assert mean.metrics["windows"] == 7 and mean.counts["texts_folded"] == 2
    assert mean.metrics["unseen_label_texts"] == 1
    assert mean.unseen_label == {"texts": 1, "ids": ["t5"], "labels": {"d": 1}}
    assert mean.metrics["texts_without_prediction"] == 2
    assert [(u["example_id"], u["reason"]) for u in mean.unscored] == [("t4", "empty text"), ("t5", SKIP_UNKNOWN_LABEL)]
    assert mean.confusion_matrix == {"labels": LABELS, "matrix": [[1, 0, 0], [1, 1, 0], [0, 0, 1]]}
    # the same texts as sklearn sees them: gold t4 unknown, t5 outside the set; no prediction for either
    gold = [0, 1, 2, M.OUTSIDE_LABELS, M.OUTSIDE_LABELS, 1]
    predicted = [0, 0, 2, M.NO_PREDICTION, M.NO_PREDICTION, 1]
    assert mean.metrics["macro_f1"] == pytest.approx(
        sklearn_metrics.f1_score(gold, predicted, labels=[0, 1, 2], average="macro", zero_division=0))
    assert mean.metrics["mcc"] == pytest.approx(sklearn_metrics.matthews_corrcoef(gold, predicted))
    probabilities = {row[0]: row[3] for row in mean.rows}
    assert probabilities["t4"] is None
    np.testing.assert_allclose(probabilities["t1"].sum(), 1.0)


def test_a_text_without_features_that_prep_did_not_skip_is_an_error():
    gold = [*GOLD, GoldText("t7", "a", 7)]
    with pytest.raises(ValueError, match="no features and were not skipped by prep"):
        _evaluate(gold=gold)
    with pytest.raises(ValueError, match="not texts of the data file"):
        _evaluate(gold=[g for g in GOLD if g.example_id != "t6"])
    partial = _windows(FIXTURE).slice(0, 3)  # t2 has 2 of its 3 windows
    with pytest.raises(ValueError, match="num_windows"):
        _evaluate(table=partial, gold=[g for g in GOLD if g.example_id not in ("t3", "t6")])


def test_label_set_of_model_and_features_must_agree():
    with pytest.raises(ValueError, match="trained on labels"):
        _evaluate(model=MarkerModel(3, labels=["b", "a", "c"]))
    with pytest.raises(ValueError, match="expected"):
        _evaluate(model=MarkerModel(2))
    assert _evaluate(model=MarkerModel(3, labels=LABELS)).metrics["accuracy"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# the engine's entry, files, re-scoring, ensembles, report
# ---------------------------------------------------------------------------------------------


def _write_data(path: Path, rows) -> Path:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerows(rows)
    return path


def _context(tmp_path: Path, regression: bool = False, pool: str = "mean", model=None) -> EvalContext:
    if regression:
        texts = [("r1", 1.0, [[0]]), ("r2", 2.0, [[0, 0], [0, 0, 0]]), ("r3", 4.0, [[0, 0, 0, 0]])]
        data = _write_data(tmp_path / "values.csv", [("r1", "x", "1.0"), ("r2", "y", "2"), ("r3", "z", "4.0"),
                                                     ("r4", "", "3")])
        info = {"labels": [], "label_type": "float"}
        skipped = [{"example_id": "r4", "reason": "empty text", "where": "line 5"}]
    else:
        texts, skipped, info = FIXTURE, SKIPPED, {"labels": LABELS, "label_type": "str"}
        # lines 2..7 of the CSV (line 1 is the header)
        skipped = [{**s, "where": f"line {int(s['where'].split()[1]) + 1}"} for s in skipped]
        data = _write_data(tmp_path / "test.csv", DATA)
    features = write_feature_dir(tmp_path / "features", _windows(texts, regression), "textclass", "test", 16)
    manifest = {"input": {**info, "format": "csv", "text_column": "text", "label_column": "label",
                          "text_pair_column": None, "id_column": "id"}, "skipped": skipped}
    return EvalContext(model=model or MarkerModel(1 if regression else 3), features=open_features(features),
                       manifest=manifest, data_path=data, config=TextClassEvalConfig(fold_pool=pool), device="cpu",
                       pad_id=0)


def _run(context: EvalContext, out: Path) -> dict:
    """What eval.run does with an outcome: the summary (config recorded) and the files."""
    outcome = evaluate(context)
    out.mkdir(parents=True, exist_ok=True)
    outcome.write_files(out)
    summary = {"task": "textclass", "config": context.config.to_dict(), **outcome.summary,
               "inputs": {"data": {"path": str(context.data_path), "sha256": "same"}}}
    (out / "metrics.json").write_text(json.dumps(summary))
    return summary, outcome


def test_evaluate_writes_test_predictions_csv_that_rescores_the_same(tmp_path):
    summary, _ = _run(_context(tmp_path), tmp_path / "eval")
    json.dumps(summary)  # metrics.json must serialise
    with open(tmp_path / "eval" / PREDICTIONS_FILE, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "truth", "prediction", "p_a", "p_b", "p_c", "windows"]
    assert [row[0] for row in rows[1:]] == ["t1", "t2", "t3", "t4", "t5", "t6"]  # every text, file order
    by_id = {row[0]: row for row in rows[1:]}
    assert by_id["t2"][1:3] == ["b", "a"] and by_id["t2"][6] == "3"
    assert by_id["t4"] == ["t4", "", "", "", "", "", "0"]  # empty text: no truth, no prediction
    assert by_id["t5"][1:3] == ["d", ""]  # unseen label: its truth kept, no prediction
    assert sum(float(p) for p in by_id["t1"][3:6]) == pytest.approx(1.0)
    metrics = summary["metrics"]
    assert metrics["accuracy"] == pytest.approx(0.5) and metrics["unseen_label_texts"] == 1
    assert summary["unseen_label"]["ids"] == ["t5"]
    assert summary["data_info"]["labels"] == LABELS
    # re-scoring the file against the data file gives the evaluation's per-text metrics
    rescored = score_textclass_file(tmp_path / "test.csv", tmp_path / "eval" / PREDICTIONS_FILE,
                                    {"format": "csv", "text_column": "text", "label_column": "label",
                                     "id_column": "id"})
    for key in ("accuracy", "macro_f1", "weighted_f1", "mcc", "unseen_label_texts", "texts"):
        assert rescored["metrics"][key] == pytest.approx(metrics[key])
    assert rescored["confusion_matrix"] == summary["confusion_matrix"]


def test_read_gold_lists_every_row_of_the_file(tmp_path):
    data = _write_data(tmp_path / "d.csv", [("x1", "t", "03"), ("", "no id", "1"), ("x1", "again", "1"),
                                            ("x2", "t", "")])
    gold = read_gold(data, {"format": "csv", "text_column": "text", "label_column": "label", "id_column": "id",
                            "label_type": "int"})
    assert [(g.example_id, g.truth, g.skip_reason is None) for g in gold] == [
        ("x1", "3", True), ("line-3", None, False), ("x1@line-4", None, False), ("x2", None, False)]


def test_ensemble_averages_probabilities(tmp_path):
    one, _ = _run(_context(tmp_path, pool="mean"), tmp_path / "mean")
    two, _ = _run(_context(tmp_path, pool="max"), tmp_path / "max")
    scored = ensemble([tmp_path / "mean", tmp_path / "max"], [one, two])
    # t2 averages softmax([2, 4/3, 0]) (mean) and softmax([3, 4, 0]) (max): "b" wins, so 4 of 6 texts are right
    assert scored["accuracy"] == pytest.approx(4 / 6)
    assert set(scored) <= {"accuracy", "macro_f1", "weighted_f1", "mcc"}


def test_regression_evaluation_and_file(tmp_path):
    summary, outcome = _run(_context(tmp_path, regression=True), tmp_path / "eval")
    metrics = summary["metrics"]
    # r1: 1 marker; r2: mean(2, 3) = 2.5; r3: 4; r4 has no features (empty text)
    assert metrics["mse"] == pytest.approx((0 + 0.25 + 0) / 3)
    assert metrics["texts_without_prediction"] == 1
    assert metrics["window_mse"] == pytest.approx((0 + 0 + 1 + 0) / 4)
    assert metrics["spearman"] == pytest.approx(1.0)
    with open(tmp_path / "eval" / PREDICTIONS_FILE, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["id", "truth", "prediction", "windows"]
    assert rows[2] == ["r2", "2.0", "2.5", "2"] and rows[4] == ["r4", "", "", "0"]
    written: list = []
    lines = report_sections(summary, tmp_path / "eval", outcome.plot_data, written)
    assert (tmp_path / "eval" / REGRESSION_PNG).is_file() and written == [tmp_path / "eval" / REGRESSION_PNG]
    assert "## Texts without a prediction" in lines
    assert set(headline(metrics)) == {"Pearson", "Spearman", "MSE"}


def test_report_sections_and_rows(tmp_path):
    summary, outcome = _run(_context(tmp_path), tmp_path / "eval")
    written: list = []
    lines = report_sections(summary, tmp_path / "eval", outcome.plot_data, written)
    assert (tmp_path / "eval" / CONFUSION_PNG).stat().st_size > 0
    assert written == [tmp_path / "eval" / CONFUSION_PNG]
    assert "| a | 50.00 | 100.00 | 66.67 | 1 |" in lines  # predicted a for t1 (a) and t2 (b)
    assert "| b | 1 | 1 | 0 | 2 |" in lines  # confusion row: gold b predicted a once, b once
    assert any(line.startswith("| t5 | d | " + SKIP_UNKNOWN_LABEL) for line in lines)
    rows = {name: value for name, value, _, _ in metric_rows(summary)}
    assert rows["Accuracy (%)"] == pytest.approx(50.0) and rows["Unseen-label texts"] == 1
    assert headline(summary["metrics"])["accuracy"] == pytest.approx(50.0)


class ZeroModel(torch.nn.Module):
    """Stand-in classifier with no preference: every text goes to the first label (argmax of a tie)."""

    def forward(self, input_ids, attention_mask, token_type_ids=None, **extra):
        return torch.zeros(input_ids.shape[0], 2)


def test_evaluate_reads_what_prep_wrote(tmp_path):
    """The manifest prep writes (input record, skipped list, folded windows) is what evaluate reads."""
    from tasks.textclass.prep import TextClassPrepConfig, prepare_textclass

    long = " ".join(["word"] * 40)
    data = _write_data(tmp_path / "test.csv", [("k1", long, "neg"), ("k2", "short", "pos"), ("k3", "", "pos"),
                                               ("k4", "odd one", "meh"), ("k5", "fine", "neg")])
    config = TextClassPrepConfig(max_seq_length=16, id_column="id", labels='["neg", "pos"]')
    manifest = prepare_textclass(data, tmp_path / "features", config=config, nproc=1)
    context = EvalContext(model=ZeroModel(), features=open_features(tmp_path / "features"), manifest=manifest,
                          data_path=data, config=TextClassEvalConfig(), device="cpu", pad_id=0)
    summary = evaluate(context).summary
    assert summary["counts"]["texts"] == 5 and summary["counts"]["windows"] == manifest["counts"]["features_out"]
    assert summary["counts"]["texts_folded"] == 1
    assert summary["unseen_label"] == {"texts": 1, "ids": ["k4"], "labels": {"meh": 1}}
    assert {u["example_id"] for u in summary["unscored"]} == {"k3", "k4"}
    # all "neg": k1 and k5 right, of five texts
    assert summary["metrics"]["accuracy"] == pytest.approx(2 / 5)


def test_command_line_flags(tmp_path):
    """eval's flags come from TextClassEvalConfig; score-textclass takes prep's column flags."""
    import argparse

    from prep.cli_args import add_dataclass_arguments, values_for
    from tasks.textclass.score import add_score_args, score_file

    parser = argparse.ArgumentParser()
    add_dataclass_arguments(parser, TextClassEvalConfig)
    parsed = parser.parse_args(["--fold-pool", "max"])
    assert TextClassEvalConfig(**values_for(TextClassEvalConfig, parsed)).fold_pool == "max"
    with pytest.raises(SystemExit):
        parser.parse_args(["--fold-pool", "median"])
    _run(_context(tmp_path), tmp_path / "eval")
    score = argparse.ArgumentParser()
    score.add_argument("--data")
    score.add_argument("--predictions")
    add_score_args(score)
    args = score.parse_args(["--data", str(tmp_path / "test.csv"), "--predictions",
                             str(tmp_path / "eval" / PREDICTIONS_FILE), "--id-column", "id"])
    assert score_file(args)["metrics"]["accuracy"] == pytest.approx(0.5)
