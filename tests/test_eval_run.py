"""Evaluation end to end: prep features -> a model -> eval outputs, (the bad-input paths: tests/test_eval_refusals.py).

Two kinds of model: a tiny random BERT saved through train's API (the file and CLI wiring),
and "oracle" modules that put their logits on the labelled answer of each feature (the
decoding and scoring path must then recover the gold answers).
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
import torch
from torch import nn

from eval.__main__ import main as eval_main
from tasks.gap.evaluate import GapEvalConfig
from tasks.squad.evaluate import SquadEvalConfig
from tasks.gap.evaluate import evaluate_gap
from tasks.gap.formats import read_gap_gold
from eval.report import parse_metrics_table
from tasks.gap.score import score_gap_file
from tasks.squad.score import score_squad_file
from tasks.squad.evaluate import evaluate_squad
from tasks.squad.read import load_squad_data
from prep.features import open_features
from tests.conftest import shared_data


# --- fixtures -------------------------------------------------------------------------------


def make_model_dir(out_dir, task: str, head: str, tokenizer_dir, with_logs: bool = True):
    """A finished 'training output' with a tiny random BERT (2 layers, hidden 64), via train's API."""
    from transformers import BertConfig, BertModel

    from train.config import TrainConfig
    from tasks import get_task
    from train.model import save_finetuned

    torch.manual_seed(0)
    vocab_size = len((tokenizer_dir / "vocab.txt").read_text(encoding="utf-8").splitlines())
    encoder = BertModel(BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=128, max_position_embeddings=512), add_pooling_layer=False)
    save_finetuned(get_task(task).train.build_model(head, encoder), get_task(task).train, out_dir, tokenizer_dir)
    config = TrainConfig(task=task, head=head, features_dir="features", run_dir=str(out_dir),
                         model_dir=str(tokenizer_dir), precision="fp32", global_batch_size=8, epochs=1)
    (out_dir / "train_config.json").write_text(json.dumps(config.to_dict(), indent=2))
    if with_logs:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(log_dir=str(out_dir / "tb"))
        for step in range(1, 6):
            writer.add_scalar("train/loss", 2.0 / step, step)
            writer.add_scalar("train/lr", 1e-5 * step, step)
            writer.add_scalar("train/sequences_per_second", 100.0 + step, step)
        writer.add_scalar("eval/accuracy", 0.5, 5)
        writer.close()
        (out_dir / "metrics.json").write_text(json.dumps({
            "task": task, "sequences_per_second": 105.5, "tokens_per_second": 12345.0, "train_seconds": 3.5,
            "world_size": 1, "device": "cpu", "precision": "fp32", "padding_fraction": 0.1,
        }))
    return out_dir


def subset_squad(src, dst, articles: slice, paragraphs: int = 3):
    payload = json.loads(src.read_text(encoding="utf-8"))
    payload["data"] = payload["data"][articles]
    for article in payload["data"]:
        article["paragraphs"] = article["paragraphs"][:paragraphs]
    dst.write_text(json.dumps(payload), encoding="utf-8")
    return dst


@pytest.fixture(scope="module")
def squad_v1(tmp_path_factory, tokenizer_dir):
    from tasks.squad.prep import SquadPrepConfig, prepare_squad

    root = tmp_path_factory.mktemp("squad")
    data = subset_squad(shared_data("squad/dev-v1.1.json"), root / "dev.json", slice(0, 2))
    # short windows so that contexts span several overlapping windows
    prepare_squad(data, root / "features", tokenizer_dir,
                  SquadPrepConfig(max_seq_length=96, doc_stride=32, max_query_length=32, split="eval"),
                  nproc=1, mode="merge")
    model = make_model_dir(root / "train", "squad", "span", tokenizer_dir)
    return {"root": root, "data": data, "features": root / "features", "model": model}


@pytest.fixture(scope="module")
def gap_run(tmp_path_factory, tokenizer_dir):
    from tasks.gap.prep import GapPrepConfig, prepare_gap

    root = tmp_path_factory.mktemp("gap")
    lines = shared_data("gap/gap-development.tsv").read_text(encoding="utf-8").splitlines()
    data = root / "gap-dev-small.tsv"
    data.write_text("\n".join(lines[:41]) + "\n", encoding="utf-8")
    prepare_gap(data, root / "features", tokenizer_dir, GapPrepConfig(max_seq_length=128), nproc=1, mode="merge")
    model = make_model_dir(root / "train", "gap", "multiply", tokenizer_dir)
    return {"root": root, "data": data, "features": root / "features", "model": model}


class OracleSquad(nn.Module):
    """Logits peak on each feature's labelled start / end (found by the row's input ids)."""

    def __init__(self, table, noise: float = 0.0):
        super().__init__()
        self.noise = noise
        self.labels = {tuple(ids): (s, e) for ids, s, e in zip(
            table.column("input_ids").to_pylist(), table.column("start_positions").to_pylist(),
            table.column("end_positions").to_pylist())}

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        start = torch.full(input_ids.shape, -10.0)
        end = torch.full(input_ids.shape, -10.0)
        for row, length in enumerate(attention_mask.sum(dim=1).tolist()):
            s, e = self.labels[tuple(input_ids[row, :length].tolist())]
            start[row, s] = 10.0
            end[row, e] = 10.0
        if self.noise:  # deterministic "noise": a function of the tokens and their positions
            positions = torch.arange(input_ids.shape[1]).float()
            start = start + self.noise * torch.sin(input_ids.float() * 12.9898 + positions * 78.233)
            end = end + self.noise * torch.sin(input_ids.float() * 4.1414 + positions * 17.17)
        return start, end


class OracleGap(nn.Module):
    """Logits peak on each feature's label (found by its tokens and mention positions)."""

    def __init__(self, table):
        super().__init__()
        columns = [table.column(name).to_pylist() for name in ("input_ids", "p_start", "a_start", "b_start", "label")]
        self.labels = {(tuple(ids), p, a, b): label for ids, p, a, b, label in zip(*columns)}

    def forward(self, input_ids, attention_mask, token_type_ids=None, *, p_start, p_end, a_start, a_end,
                b_start, b_end, segment_ids=None):
        logits = torch.zeros(input_ids.shape[0], 3)
        for row, length in enumerate(attention_mask.sum(dim=1).tolist()):
            key = (tuple(input_ids[row, :length].tolist()), int(p_start[row]), int(a_start[row]), int(b_start[row]))
            logits[row, self.labels[key]] = 5.0
        return logits


# --- the plain functions with a model object -------------------------------------------------


def test_oracle_squad_recovers_gold_answers(squad_v1):
    features = open_features(squad_v1["features"])
    data = load_squad_data(squad_v1["data"])
    results = evaluate_squad(OracleSquad(features), features, data, SquadEvalConfig(batch_size=16))
    assert results.counts["features"] > results.counts["questions"]  # several windows per question
    assert set(results.predictions) == set(data.contexts)
    assert results.metrics["exact_match"] > 90.0
    assert not results.version_2_with_negative
    # The only misses are answers that are part of a token ("8" inside "18", "gold" in "golden"):
    # the decoded span is then the whole token, which contains the gold answer.
    from tasks.squad.metrics import iter_qas

    for qa in iter_qas(data.dataset):
        if not results.exact[qa["id"]]:
            assert any(a["text"] in results.predictions[qa["id"]] for a in qa["answers"]), qa["id"]


def test_questions_prep_skipped_are_answered_empty(squad_v1):
    import pyarrow.compute as pc

    from prep.features import sorted_by_feature_id

    features = open_features(squad_v1["features"])
    data = load_squad_data(squad_v1["data"])
    dropped = data.question_ids[3]
    kept = sorted_by_feature_id(features.filter(pc.not_equal(features.column("example_id"), dropped)))
    # feature ids must stay dense: renumber as prep would have
    kept = kept.set_column(0, "feature_id", pa.array(np.arange(kept.num_rows, dtype=np.int64)))
    with pytest.raises(ValueError, match="no features and were not skipped by prep"):
        evaluate_squad(OracleSquad(features), kept, data, SquadEvalConfig())
    results = evaluate_squad(OracleSquad(features), kept, data, SquadEvalConfig(), skipped_ids=(dropped,))
    assert results.predictions[dropped] == "" and results.exact[dropped] == 0
    assert results.counts["questions_without_features"] == 1
    assert list(results.predictions) == data.question_ids  # every question, in data order


def test_oracle_squad_v2_answers_and_abstains(tmp_path, tokenizer_dir):
    from tasks.squad.prep import SquadPrepConfig, prepare_squad

    data_path = subset_squad(shared_data("squad/dev-v2.0.reconstructed.json"), tmp_path / "dev2.json", slice(0, 1), 4)
    prepare_squad(data_path, tmp_path / "features", tokenizer_dir,
                  SquadPrepConfig(max_seq_length=128, doc_stride=48, split="eval"), nproc=1, mode="merge")
    features = open_features(tmp_path / "features")
    data = load_squad_data(data_path)
    results = evaluate_squad(OracleSquad(features), features, data, SquadEvalConfig(batch_size=32))
    metrics = results.metrics
    assert results.version_2_with_negative
    assert metrics["NoAns_total"] > 0 and metrics["HasAns_total"] > 0
    assert metrics["NoAns_exact"] == 100.0  # the [CLS] label wins on every unanswerable question
    assert metrics["HasAns_exact"] > 90.0
    assert "best_f1_thresh" in metrics
    assert set(results.null_odds) == set(data.contexts)

    # A noisy model: decoding again at the threshold the search found gives the score it promised.
    noisy = OracleSquad(features, noise=20.0)
    first = evaluate_squad(noisy, features, data, SquadEvalConfig(batch_size=32))
    search = first.threshold_search
    assert search["best_f1"] > first.metrics["f1"] and search["best_f1_thresh"] < 0
    for key in ("f1", "exact"):
        cfg = SquadEvalConfig(batch_size=32, null_score_diff_threshold=search[f"best_{key}_thresh"])
        again = evaluate_squad(noisy, features, data, cfg)
        # equal up to summation order (the search adds in null-odds order, the score in data order)
        assert again.metrics[key] == pytest.approx(search[f"best_{key}"], rel=1e-12)


def test_oracle_gap_scores_perfectly(gap_run):
    features = open_features(gap_run["features"])
    gold = read_gap_gold(gap_run["data"])
    results = evaluate_gap(OracleGap(features), features, gold, GapEvalConfig(batch_size=8))
    assert results.counts["examples_without_features"] == 0  # prep skips none of these 40 real rows
    assert len(gold) == 40
    assert results.metrics["accuracy"] == 1.0
    assert results.metrics["f1_overall"] == 100.0
    assert results.metrics["f1_masculine"] == results.metrics["f1_feminine"] == 100.0
    assert results.metrics["log_loss"] < 0.1


# --- files, CLI and reports -------------------------------------------------------------------


def test_squad_cli_writes_official_outputs(squad_v1, tmp_path):
    out = tmp_path / "eval-squad"
    code = eval_main(["squad", "--model", str(squad_v1["model"]), "--features", str(squad_v1["features"]),
                      "--data", str(squad_v1["data"]), "--out", str(out), "--batch-size", "32", "--device", "cpu"])
    assert code == 0
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "predictions.json", "nbest.json", "report.md", "manifest.json",
            "training_curves.png", "squad_by_question_type.png"} <= names
    assert "null_odds.json" not in names  # v1.1
    predictions = json.loads((out / "predictions.json").read_text())
    data = load_squad_data(squad_v1["data"])
    assert list(predictions) == data.question_ids and all(isinstance(v, str) for v in predictions.values())
    summary = json.loads((out / "metrics.json").read_text())
    # the metrics are what the official v1.1 computation gives on predictions.json
    assert summary["metrics"] == score_squad_file(squad_v1["data"], out / "predictions.json")
    table = parse_metrics_table((out / "report.md").read_text())
    assert table["EM"]["value"] == pytest.approx(summary["metrics"]["exact_match"], abs=0.005)
    assert table["F1"]["anchor"] == 88.5 and table["EM"]["anchor"] == 80.8
    manifest = json.loads((out / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == names - {"manifest.json"}
    assert summary["inputs"]["tokenizer_fingerprint"] and summary["inputs"]["head_sha256"]
    assert summary["train_metrics"]["sequences_per_second"] == 105.5


def test_gap_cli_writes_both_formats(gap_run, tmp_path):
    out = tmp_path / "eval-gap"
    code = eval_main(["gap", "--model", str(gap_run["model"]), "--features", str(gap_run["features"]),
                      "--data", str(gap_run["data"]), "--out", str(out), "--device", "cpu"])
    assert code == 0
    summary = json.loads((out / "metrics.json").read_text())
    gold = read_gap_gold(gap_run["data"])
    submission = (out / "submission.csv").read_text().splitlines()
    assert submission[0] == "ID,A,B,NEITHER" and len(submission) == len(gold) + 1
    tsv = (out / "gap_predictions.tsv").read_text().splitlines()
    assert len(tsv) == len(gold) and tsv[0].split("\t")[0] == gold[0].example_id
    assert all(line.split("\t")[1] in ("TRUE", "FALSE") for line in tsv)
    # re-scoring the written files gives the figures in metrics.json
    rescored = score_gap_file(gap_run["data"], out / "submission.csv")
    assert rescored["log_loss"] == pytest.approx(summary["metrics"]["log_loss"], rel=1e-12)
    assert score_gap_file(gap_run["data"], out / "gap_predictions.tsv")["f1_overall"] == summary["metrics"]["f1_overall"]
    assert sum(map(sum, summary["confusion_matrix"]["matrix"])) == len(gold)
    table = parse_metrics_table((out / "report.md").read_text())
    assert table["F1 overall"]["anchor"] == 66.9 and table["Bias (F/M)"]["anchor"] == 0.93
    assert {"confusion_matrix.png", "gap_f1_by_gender.png", "training_curves.png"} <= {p.name for p in out.iterdir()}


def test_compare_runs(squad_v1, tmp_path):
    runs = []
    for n_best in ("20", "2"):
        out = tmp_path / f"run-nbest{n_best}"
        assert eval_main(["squad", "--model", str(squad_v1["model"]), "--features", str(squad_v1["features"]),
                          "--data", str(squad_v1["data"]), "--out", str(out), "--n-best-size", n_best,
                          "--device", "cpu"]) == 0
        runs.append(str(out))
    assert eval_main(["compare", *runs, "--out", str(tmp_path / "cmp.csv")]) == 0
    lines = (tmp_path / "cmp.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 3 and {"run", "EM", "F1", "model", "train seq/s"} <= set(header)
    assert [line.split(",")[0] for line in lines[1:]] == ["run-nbest20", "run-nbest2"]


# --- bad input -------------------------------------------------------------------------------
