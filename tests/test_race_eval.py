"""RACE evaluation: accuracy by level on a fixture, answers.json, re-scoring, ensembles, and a trained run end to end."""

from __future__ import annotations

from tasks import get_task
import argparse
import json

import numpy as np
import pytest
from torch import nn

from prep.features import open_features
from tasks.race.evaluate import RaceEvalConfig, evaluate, evaluate_race, gold_for
from tasks.race.metrics import ANSWERS_FILE, read_answers, score_answers
from tasks.race.prep import RacePrepConfig, prepare_race
from tasks.race.read import read_race
from tasks.race.score import ensemble, score_file
from tasks.spec import EvalContext

pytestmark = pytest.mark.usefixtures("one_cpu_thread")

# (level, file number, [(answer letter, index of the option that says "yes")]); the stub model picks "yes".
ARTICLES = [
    ("middle", 1, [("A", 0), ("C", 2)]),  # both right
    ("middle", 2, [("B", 3)]),  # wrong
    ("high", 1, [("D", 3), ("A", 1)]),  # right, wrong
    ("high", 2, [("C", 2)]),  # right
]
# middle: 2/3 right plus a 3-option question (scored, unanswered) = 2/4; high: 2/3; all: 4/7


def article_record(level, number, questions, extra=()):
    options = [["yes" if k == yes else "no" for k in range(4)] for _, yes in questions] + [o for o, _ in extra]
    return {"answers": [a for a, _ in questions] + [a for _, a in extra], "options": options,
            "questions": [f"Which option is it, {level} {number}?" for _ in range(len(options))],
            "article": f"The passage of {level} article {number} talks about many things.", "id": f"{level}{number}.txt"}


@pytest.fixture(scope="module")
def data(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("race_eval")
    records = [article_record(level, n, qs) for level, n, qs in ARTICLES]
    records[1]["options"].append(["yes", "no", "no"])  # middle2: a question with three options
    records[1]["answers"].append("A")
    records[1]["questions"].append("A question with three options?")
    records[3]["options"].append(["yes", "no", "no", "no"])  # high2: answered E, cannot be scored
    records[3]["answers"].append("E")
    records[3]["questions"].append("A question answered E?")
    jsonl = root / "dev.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
    for level, number, _ in ARTICLES:  # the same articles as the release tree
        record = next(r for r in records if r["id"] == f"{level}{number}.txt")
        (root / "RACE" / "dev" / level).mkdir(parents=True, exist_ok=True)
        (root / "RACE" / "dev" / level / f"{number}.txt").write_text(json.dumps(record))
    features = root / "features"
    manifest = prepare_race(jsonl, features, tokenizer_dir, RacePrepConfig(max_seq_length=48), nproc=1)
    return {"root": root, "jsonl": jsonl, "tree": root / "RACE" / "dev", "features": features, "manifest": manifest}


class YesModel(nn.Module):
    """Scores each option by how often it holds the token ``yes``: the option that says yes wins."""

    def __init__(self, yes_id: int, scale: float = 3.0):
        super().__init__()
        self.yes_id, self.scale = yes_id, scale

    def forward(self, input_ids, attention_mask, **_):
        return self.scale * ((input_ids == self.yes_id) & attention_mask.bool()).sum(-1).float()


@pytest.fixture(scope="module")
def yes_model(hf_tokenizer):
    return YesModel(hf_tokenizer.convert_tokens_to_ids("yes"))


def test_accuracy_by_level_and_answers_json(data, yes_model, tmp_path):
    gold = gold_for(data["jsonl"], data["manifest"])
    assert [g.question_id for g in gold][-1] == "high2-0"  # the question answered E is not gold
    context = EvalContext(model=yes_model, features=open_features(data["features"]), manifest=data["manifest"],
                          data_path=data["jsonl"], config=RaceEvalConfig(batch_size=2), device="cpu", pad_id=0)
    outcome = evaluate(context)
    metrics, counts = outcome.summary["metrics"], outcome.summary["counts"]
    assert metrics["accuracy"] == pytest.approx(100 * 4 / 7)
    assert metrics["accuracy_middle"] == pytest.approx(50.0) and metrics["accuracy_high"] == pytest.approx(100 * 2 / 3)
    assert counts == {"questions": 7, "unanswered": 1, "questions_high": 3, "questions_middle": 4, "features": 6}
    outcome.write_files(tmp_path)
    answers = json.loads((tmp_path / ANSWERS_FILE).read_text())
    assert list(answers) == [g.question_id for g in gold]
    assert answers["middle1-1"]["answer"] == "C" and answers["middle2-0"]["answer"] == "D"
    assert answers["middle2-1"] == {"answer": None, "probabilities": [0.25] * 4}  # skipped by prep: wrong
    for record in answers.values():
        assert set(record) == {"answer", "probabilities"} and len(record["probabilities"]) == 4
        assert sum(record["probabilities"]) == pytest.approx(1.0)
    probs = answers["high1-0"]["probabilities"]
    assert probs[3] == pytest.approx(np.exp(3) / (np.exp(3) + 3))  # softmax of the model's four scores
    # score-race re-scores the written file to the same figures, from the JSON Lines or the release folder
    for data_path in (data["jsonl"], data["tree"]):
        args = argparse.Namespace(data=str(data_path), predictions=str(tmp_path / ANSWERS_FILE), split=None,
                                  max_questions=None, every_nth=1)
        assert score_file(args) == pytest.approx(metrics)


def test_features_of_another_file_and_bad_answers_are_errors(data, yes_model, tmp_path):
    other = read_race(data["jsonl"]).gold[:3]
    with pytest.raises(ValueError, match="not in the data"):
        evaluate_race(yes_model, open_features(data["features"]), other, RaceEvalConfig())
    bad = tmp_path / "answers.json"
    bad.write_text(json.dumps({"middle1-0": {"answer": "E", "probabilities": [1, 0, 0, 0]}}))
    with pytest.raises(ValueError, match="expected"):
        read_answers(bad)
    with pytest.raises(ValueError, match="not in the data"):
        score_answers(read_race(data["jsonl"]).gold, {"nope-0": {"answer": "A", "probabilities": [1, 0, 0, 0]}})


def test_ensemble_averages_the_runs_probabilities(data, tmp_path):
    gold = read_race(data["jsonl"]).gold
    summary = {"inputs": {"data": {"path": str(data["jsonl"]), "sha256": "x"}, "features_config": data["manifest"]["config"]}}
    runs = []
    for k, right in enumerate((0.6, 0.3)):  # run 0 puts 0.6 on the gold answer, run 1 0.3 (and 0.4 on another)
        answers = {}
        for g in gold:
            probs = [0.4 / 3] * 4 if k == 0 else [0.0] * 4
            probs[g.label] = right
            if k == 1:
                probs[(g.label + 1) % 4] = 0.4
                probs[(g.label + 2) % 4] = 0.3
            answers[g.question_id] = {"answer": "ABCD"[int(np.argmax(probs))], "probabilities": probs}
        folder = tmp_path / f"run{k}"
        folder.mkdir()
        (folder / ANSWERS_FILE).write_text(json.dumps(answers))
        runs.append(folder)
    # alone: 100% and 0%; averaged, the gold answer has 0.45 against at most 0.2 + 0.067: all right
    assert ensemble(runs, [summary, summary])["accuracy"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="same data"):
        ensemble(runs, [summary, {"inputs": {"data": {"sha256": "y"}}}])


def test_a_trained_duma_run_evaluates_end_to_end_from_the_release_folder(data, tmp_path, tiny_encoder_dir_dropout):
    from eval.run import run_evaluation
    from train.config import TrainConfig
    from train.dist import single_process
    from train.loop import train

    tiny = tiny_encoder_dir_dropout
    config = TrainConfig(task="race", head="duma", features_dir=str(data["features"]), run_dir=str(tmp_path / "run"),
                         model_dir=str(tiny), precision="fp32", global_batch_size=2, per_device_batch_size=2, epochs=1,
                         lr=1e-3, progress_bar=False)
    metrics = train(config, get_task("race").train, single_process("cpu"))
    assert metrics["steps"] == 3 and np.isfinite(metrics["final_train_loss"])
    summary = run_evaluation(get_task("race"), tmp_path / "run", data["features"], data["tree"], tmp_path / "eval",
                             RaceEvalConfig(), device="cpu")
    assert summary["counts"]["questions"] == 7 and 0 <= summary["metrics"]["accuracy"] <= 100
    assert read_answers(tmp_path / "eval" / ANSWERS_FILE).keys() == {g.question_id for g in read_race(data["jsonl"]).gold}
    assert (tmp_path / "eval" / "report.md").read_text().count("## Accuracy by level") == 1
