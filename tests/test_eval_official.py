"""The README's "equal to the official scripts to the last digit", checked on the WRITTEN files.

An evaluation runs end to end (features -> model -> predictions.json / null_odds.json /
gap_predictions.tsv / submission.csv -> metrics.json). The files it wrote are then re-scored
here with reference copies of the official logic (SQuAD v1.1 and v2.0 evaluate scripts, the
GAP scorer's counting, Kaggle's log loss), never with the project's scorer, and compared with
the metrics.json it wrote. The model is an "oracle" with deterministic noise, so the scores
are mid-range (every kind of hit and miss occurs) rather than 0 or 100.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

import eval.run
from eval.__main__ import main as eval_main
from prep.features import open_features
from tests.conftest import shared_data
from tests.test_eval_gap_metrics import _reference_scorer
from tests.test_eval_run import OracleGap, OracleSquad, gap_run, make_model_dir, squad_v1, subset_squad  # noqa: F401
from tests.test_eval_squad_metrics import _official_normalize, _official_v1, _official_v2


# With this noise the null-odds of unanswerable questions sit near -3.8 and of answerable ones
# below -44: the thresholds below split the first group, or take all of it and part of the second.
NOISE = 13.0


class NoisyGap(OracleGap):
    """The oracle's logits plus deterministic noise keyed on each row's tokens: some rows wrong."""

    def forward(self, input_ids, attention_mask, token_type_ids=None, **mentions):
        logits = super().forward(input_ids, attention_mask, token_type_ids, **mentions) / 5.0 * 2.0
        key = (input_ids.float() * attention_mask).sum(dim=1, keepdim=True)
        return logits + 2.5 * torch.sin(key * torch.tensor([[0.013, 0.029, 0.041]]))


def read_json(path):
    return json.loads(path.read_text(encoding="utf-8"))


def use_model(monkeypatch, model):
    """Evaluate with ``model`` in place of the saved weights (all file checks stay as they are)."""
    monkeypatch.setattr(eval.run, "load_model", lambda model_dir, spec, device: (model.eval(), {}))


def test_squad_v1_written_predictions_rescore_to_metrics_json(squad_v1, tmp_path, monkeypatch):
    use_model(monkeypatch, OracleSquad(open_features(squad_v1["features"]), noise=12.0))
    out = tmp_path / "eval"
    assert eval_main(["squad", "--model", str(squad_v1["model"]), "--features", str(squad_v1["features"]),
                      "--data", str(squad_v1["data"]), "--out", str(out), "--device", "cpu"]) == 0
    written = read_json(out / "metrics.json")
    dataset = read_json(squad_v1["data"])["data"]
    predictions = read_json(out / "predictions.json")
    official = _official_v1(dataset, predictions)
    assert written["metrics"] == official  # exact float equality: the last digit
    assert written["config"]["version_2_with_negative"] is False
    assert 10.0 < official["exact_match"] < 90.0 and official["f1"] > official["exact_match"]


@pytest.fixture(scope="module")
def squad_v2(tmp_path_factory, tokenizer_dir):
    from tasks.squad.prep import SquadPrepConfig, prepare_squad

    root = tmp_path_factory.mktemp("squad-v2")
    data = subset_squad(shared_data("squad/dev-v2.0.reconstructed.json"), root / "dev2.json", slice(0, 1), 4)
    prepare_squad(data, root / "features", tokenizer_dir,
                  SquadPrepConfig(max_seq_length=128, doc_stride=48, split="eval"), nproc=1, mode="merge")
    model = make_model_dir(root / "train", "squad", "span", tokenizer_dir, with_logs=False)
    return {"data": data, "features": root / "features", "model": model}


@pytest.mark.parametrize("threshold", [-3.78, -50.0])
def test_squad_v2_written_files_rescore_to_metrics_json(squad_v2, tmp_path, monkeypatch, threshold):
    """predictions.json + null_odds.json (the official --na-prob-file) at --null-score-diff-threshold."""
    use_model(monkeypatch, OracleSquad(open_features(squad_v2["features"]), noise=NOISE))
    out = tmp_path / "eval"
    assert eval_main(["squad", "--model", str(squad_v2["model"]), "--features", str(squad_v2["features"]),
                      "--data", str(squad_v2["data"]), "--out", str(out), "--device", "cpu",
                      "--null-score-diff-threshold", str(threshold)]) == 0
    written = read_json(out / "metrics.json")
    dataset = read_json(squad_v2["data"])["data"]
    predictions, null_odds = read_json(out / "predictions.json"), read_json(out / "null_odds.json")
    assert written["config"]["version_2_with_negative"] is True
    assert written["config"]["null_score_diff_threshold"] == threshold
    official = _official_v2(dataset, predictions, null_odds, threshold)
    assert written["metrics"] == official  # every key, exact floats: the last digit
    assert official["NoAns_total"] > 0 and official["HasAns_total"] > 0
    assert 0 < official["exact"] < 100 and 0 < official["HasAns_f1"] < 100 and official["NoAns_exact"] > 0

    # One spelling of no-answer: "" exactly where the null beat the best span by more than the
    # threshold, and never anything that normalises to "" elsewhere.
    assert set(predictions) == set(null_odds)
    for qid, text in predictions.items():
        if null_odds[qid] > threshold:
            assert text == "", (qid, text)
        else:
            assert _official_normalize(text) != "", (qid, text)
    assert sum(text == "" for text in predictions.values()) == written["counts"]["questions_answered_empty"] > 0


def test_gap_written_files_rescore_to_metrics_json(gap_run, tmp_path, monkeypatch):
    use_model(monkeypatch, NoisyGap(open_features(gap_run["features"])))
    out = tmp_path / "eval"
    assert eval_main(["gap", "--model", str(gap_run["model"]), "--features", str(gap_run["features"]),
                      "--data", str(gap_run["data"]), "--out", str(out), "--device", "cpu"]) == 0
    metrics = read_json(out / "metrics.json")["metrics"]

    # The GAP scorer's counting over the headerless ID / A-coref / B-coref TSV.
    system = {}
    for line in (out / "gap_predictions.tsv").read_text(encoding="utf-8").splitlines():
        example_id, a, b = line.split("\t")
        system[example_id] = (a == "TRUE", b == "TRUE")
    overall, masculine, feminine, bias = _reference_scorer(gap_run["data"], system)
    assert (metrics["f1_overall"], metrics["f1_masculine"], metrics["f1_feminine"], metrics["bias_f_over_m"]) == (
        overall, masculine, feminine, bias)
    assert 20.0 < overall < 95.0  # the noise makes real mistakes

    # Kaggle's multi-class log loss over submission.csv: clip to [1e-15, 1 - 1e-15], renormalise.
    with open(gap_run["data"], encoding="utf-8", newline="") as handle:
        gold = {row["ID"]: 0 if row["A-coref"] == "TRUE" else 1 if row["B-coref"] == "TRUE" else 2
                for row in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)}
    with open(out / "submission.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["ID"] for row in rows] == list(gold)
    probs = np.clip(np.array([[float(row[k]) for k in ("A", "B", "NEITHER")] for row in rows]), 1e-15, 1 - 1e-15)
    probs /= probs.sum(axis=1, keepdims=True)
    log_loss = -sum(math.log(p[gold[row["ID"]]]) for p, row in zip(probs, rows)) / len(rows)
    assert metrics["log_loss"] == pytest.approx(log_loss, rel=1e-12)
    accuracy = sum(int(np.argmax(p)) == gold[row["ID"]] for p, row in zip(probs, rows)) / len(rows)
    assert metrics["accuracy"] == accuracy