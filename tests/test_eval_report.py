"""report.md + plots from metrics summaries (no model), and the run comparison table."""

from __future__ import annotations

from tasks import all_tasks, get_task
import json

import pytest

from eval.compare import compare_runs, comparison_rows
from eval.report import parse_metrics_table, read_tensorboard_scalars, write_report

pytestmark = pytest.mark.fast

EVALS = {spec.name: spec.eval for spec in all_tasks()}

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

INPUTS = {
    "model_dir": "/runs/train-x", "features_dir": "/runs/feat", "data": {"path": "/d/dev-v1.1.json", "sha256": "ab" * 32},
    "tokenizer_fingerprint": "cd" * 32, "features_manifest_sha256": "ef" * 32, "features_config": {"max_seq_length": 384},
    "encoder_weights_sha256": {"model.safetensors": "12" * 32}, "head_sha256": "34" * 32, "train_config_sha256": "56" * 32,
}


def squad_summary(em=81.234, f1=88.765, lr=3e-5):
    return {
        "task": "squad", "created": "2026-01-01T00:00:00+00:00", "seconds": 12.5,
        "metrics": {"exact_match": em, "f1": f1},
        "config": {"n_best_size": 20, "max_answer_length": 30, "version_2_with_negative": False},
        "breakdown_by_question_type": [{"type": "what", "count": 10, "exact": 80.0, "f1": 90.0},
                                       {"type": "who", "count": 4, "exact": 75.0, "f1": 80.0}],
        "counts": {"questions": 14, "features": 15}, "timing": {"features_per_second": 250.0},
        "inputs": INPUTS, "train_config": {"task": "squad", "head": "span", "lr": lr, "epochs": 2,
                                           "model_dir": "/m/bert-base-uncased", "global_batch_size": 32},
        "train_metrics": {"sequences_per_second": 321.0, "tokens_per_second": 99000.0, "world_size": 2,
                          "eval": [{"epoch": 1, "step": 10, "loss": 1.25}, {"epoch": 2, "step": 20, "loss": 0.75}]},
    }


def gap_summary():
    card = {name: {"precision": 70.0, "recall": 60.0, "f1": f1, "tp": 6, "fp": 3, "fn": 4, "tn": 7}
            for name, f1 in (("overall", 64.6), ("masculine", 66.0), ("feminine", 63.2))}
    card["bias_f_over_m"] = 63.2 / 66.0
    return {
        "task": "gap", "created": "2026-01-01T00:00:00+00:00", "seconds": 3.0,
        "metrics": {"log_loss": 0.51234, "accuracy": 0.8125, "f1_overall": 64.6, "f1_masculine": 66.0,
                    "f1_feminine": 63.2, "bias_f_over_m": 63.2 / 66.0, "total": 16},
        "scorecard": card, "confusion_matrix": {"labels": ["A", "B", "NEITHER"], "matrix": [[5, 1, 0], [1, 6, 0], [0, 1, 2]]},
        "config": {"batch_size": 64}, "counts": {"examples": 16}, "timing": {}, "inputs": {**INPUTS, "data": {"path": "/d/gap-test.tsv", "sha256": "00" * 32}},
        "train_config": {"task": "gap", "head": "multiply"}, "train_metrics": None,
    }


@pytest.fixture
def train_dir(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(log_dir=str(tmp_path / "train" / "tb"))
    for step in (10, 20, 30):
        writer.add_scalar("train/loss", 3.0 / step, step)
        writer.add_scalar("train/lr", 1e-4 * step, step)
    writer.add_scalar("eval/f1", 55.0, 30)
    writer.close()
    return tmp_path / "train"


def test_squad_report_has_table_figures_and_sections(tmp_path, train_dir):
    out = tmp_path / "out"
    out.mkdir()
    written = write_report(out, squad_summary(), get_task("squad").eval, train_dir)
    names = {p.name for p in written}
    assert names == {"report.md", "training_curves.png", "squad_by_question_type.png"}
    for name in names - {"report.md"}:
        assert (out / name).read_bytes()[:8] == PNG_MAGIC
    text = (out / "report.md").read_text()
    table = parse_metrics_table(text)
    assert table == {"EM": {"value": 81.23, "anchor": 80.8}, "F1": {"value": 88.77, "anchor": 88.5}}
    for heading in ("## Training curves", "## Throughput", "## Configuration", "## Artifacts", "## By question type"):
        assert heading in text
    assert "| train/loss | 3 | 0.3 | 0.1 |" in text  # first / last of the TensorBoard series
    assert "| sequences_per_second | 321 |" in text
    assert "sha256 1212121212121212" in text  # encoder weights hash
    assert "| 2 | 20 | 0.75 |" in text  # train's per-epoch evaluation


def test_gap_report_confusion_and_gender(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    written = write_report(out, gap_summary(), get_task("gap").eval, model_dir=None)
    assert {p.name for p in written} == {"report.md", "confusion_matrix.png", "gap_f1_by_gender.png"}
    text = (out / "report.md").read_text()
    table = parse_metrics_table(text)
    assert table["Log loss"]["value"] == 0.5123
    assert table["Accuracy (%)"]["value"] == 81.25
    assert table["F1 overall"] == {"value": 64.6, "anchor": 66.9}
    assert table["Bias (F/M)"] == {"value": 0.958, "anchor": 0.93}
    assert "| B | 1 | 6 | 0 | 7 |" in text  # confusion row with its total
    assert "Bias (F/M): 0.96" in text
    assert "No TensorBoard scalars" in text and "No throughput figures" in text


def test_v2_table_has_no_v1_anchor(tmp_path):
    summary = squad_summary()
    summary["metrics"] = {"exact": 70.0, "f1": 73.0, "total": 10, "HasAns_exact": 60.0, "HasAns_f1": 66.0,
                          "NoAns_exact": 80.0, "NoAns_f1": 80.0, "best_exact": 71.0, "best_exact_thresh": -1.5,
                          "best_f1": 74.0, "best_f1_thresh": -1.25}
    out = tmp_path / "out"
    out.mkdir()
    write_report(out, summary, get_task(summary["task"]).eval, None, {"null_odds": {"has_answer": [-3.0, -1.0], "no_answer": [0.5, 2.0]}})
    table = parse_metrics_table((out / "report.md").read_text())
    assert table["EM"] == {"value": 70.0, "anchor": None}
    assert table["best F1 threshold"]["value"] == -1.25
    assert (out / "null_odds.png").read_bytes()[:8] == PNG_MAGIC


def test_read_tensorboard_scalars(train_dir):
    series = read_tensorboard_scalars(train_dir / "tb")
    assert series["train/loss"] == [(10, pytest.approx(0.3)), (20, pytest.approx(0.15)), (30, pytest.approx(0.1))]
    assert series["eval/f1"] == [(30, 55.0)]
    assert read_tensorboard_scalars(train_dir / "missing") == {}


def _fake_run(path, summary):
    path.mkdir(parents=True)
    (path / "metrics.json").write_text(json.dumps(summary))
    (path / "manifest.json").write_text(json.dumps({"files": []}))
    return path


def test_compare_shows_metrics_and_differing_settings(tmp_path):
    a = _fake_run(tmp_path / "a", squad_summary(em=80.0, f1=87.0, lr=3e-5))
    b = _fake_run(tmp_path / "b", squad_summary(em=82.0, f1=89.0, lr=5e-5))
    g = _fake_run(tmp_path / "g", gap_summary())
    rows = comparison_rows([a, b, g], EVALS)
    assert [row["run"] for row in rows] == ["a", "b", "g"]
    assert rows[1]["EM"] == 82.0 and rows[0]["lr"] == 3e-5 and rows[0]["model"] == "bert-base-uncased"
    assert rows[2]["bias F/M"] == pytest.approx(63.2 / 66.0)
    markdown = compare_runs([a, b, g], EVALS, tmp_path / "cmp.md")
    assert "### squad" in markdown and "### gap" in markdown
    assert (tmp_path / "cmp.md").read_text() == markdown
    compare_runs([a, b], EVALS, tmp_path / "cmp.json")
    assert [row["F1"] for row in json.loads((tmp_path / "cmp.json").read_text())] == [87.0, 89.0]
    with pytest.raises(FileNotFoundError, match="not a finished evaluation"):
        compare_runs([tmp_path / "nothing"], EVALS)
