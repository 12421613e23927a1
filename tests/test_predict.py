"""Predictions on new data (eval/predict.py, ``python -m eval predict``, ``Predict``, the Python API).

For every task: a tiny run, its evaluation on a slice of the real data, then the same file with its
answers or labels removed predicted: the predictions are evaluation's, exactly. Also: the CLI's
files, a bad row reported, the Python API agreeing with the CLI, and ``Predict`` cached on rerun.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import luigi
import pytest
import torch
from luigi.execution_summary import LuigiStatusCode

from eval.__main__ import main as eval_main
from eval.api import load_predictor
from eval.predict import run_prediction
from eval.run import run_evaluation
from prep.artifact import read_manifest, sha256_file
from prep.folders import PredictFolder, RunFolder
from tasks import get_task
from tests.conftest import luigi_config, shared_data
from tests.test_eval_run import subset_squad

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


def make_run(run_dir: Path, task: str, encoder_dir: Path, features_dir: Path, head: str | None = None) -> Path:
    """A finished run of a tiny random model shaped by ``features_dir`` (what a fine-tune of them records)."""
    from train.config import TrainConfig
    from train.model import build_model, save_finetuned

    spec = get_task(task).train
    manifest = read_manifest(features_dir)
    head = head or spec.default_head
    torch.manual_seed(0)
    model = build_model(spec, head, encoder_dir, data_info=manifest["input"])
    with torch.no_grad():  # a head whose outputs differ visibly between inputs
        for param in model.head.parameters():
            param.normal_(0.0, 0.5)
    save_finetuned(model, spec, run_dir, encoder_dir)
    config = TrainConfig(task=task, head=head, features_dir=str(features_dir), run_dir=str(run_dir),
                         model_dir=str(encoder_dir), precision="fp32", global_batch_size=8, epochs=1)
    run = RunFolder(run_dir)
    run.train_config.write_text(json.dumps({**config.to_dict(), "max_seq_length": manifest["config"]["max_seq_length"],
                                            "tokenizer": manifest["tokenizer"], "data_info": manifest["input"]}))
    run.metrics.write_text(json.dumps({"task": task}))
    return run_dir


def evaluated(root: Path, task: str, encoder_dir: Path, data: Path, prep_config, **eval_settings) -> dict:
    """Features of ``data`` -> a run shaped by them -> its evaluation of ``data``."""
    spec = get_task(task)
    spec.prep.prepare(data, root / "features", encoder_dir, prep_config, nproc=1, mode="merge")
    run = make_run(root / "run", task, encoder_dir, root / "features")
    run_evaluation(spec, run, root / "features", data, root / "eval", spec.eval.config(**eval_settings), device="cpu")
    return {"root": root, "run": run, "data": data, "eval": root / "eval", "spec": spec}


def predicted(case: dict, data: Path, options=None, **eval_settings) -> tuple[Path, dict]:
    out = case["root"] / f"predict-{data.stem}"
    summary = run_prediction(case["spec"], case["run"], data, out, case["spec"].eval.config(**eval_settings), options,
                             device="cpu")
    assert (out / PredictFolder.MANIFEST).is_file() and summary["data"]["sha256"] == sha256_file(data)
    assert summary["run"]["head_sha256"] == sha256_file(RunFolder(case["run"]).head)
    assert json.loads((out / PredictFolder.SUMMARY).read_text()) == summary
    manifest = json.loads((out / PredictFolder.MANIFEST).read_text())
    assert {entry["path"] for entry in manifest["files"]} == {*summary["files"], PredictFolder.SUMMARY}
    return out, summary


def read_csv(path: Path, delimiter: str = ",") -> list[dict]:
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter=delimiter))


# --- SQuAD ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def squad(tmp_path_factory, tiny_encoder_dir):
    from tasks.squad.prep import SquadPrepConfig

    root = tmp_path_factory.mktemp("predict-squad")
    data = subset_squad(shared_data("squad/dev-v1.1.json"), root / "dev.json", slice(0, 2))
    config = SquadPrepConfig(max_seq_length=96, doc_stride=32, max_query_length=32, split="eval")
    case = evaluated(root, "squad", tiny_encoder_dir, data, config, n_best_size=5)
    payload = json.loads(data.read_text(encoding="utf-8"))
    for article in payload["data"]:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                qa.pop("answers")
    case["questions"] = root / "questions.json"
    case["questions"].write_text(json.dumps(payload), encoding="utf-8")
    return case


def test_squad_predictions_without_answers_are_evaluations(squad):
    out, summary = predicted(squad, squad["questions"], n_best_size=5)
    assert sorted(summary["files"]) == ["nbest.json", "predictions.json"]
    ours = json.loads((out / "predictions.json").read_text())
    assert ours == json.loads((squad["eval"] / "predictions.json").read_text())
    assert json.loads((out / "nbest.json").read_text()) == json.loads((squad["eval"] / "nbest.json").read_text())
    assert summary["counts"]["inputs"] == summary["counts"]["questions"] == len(ours) > 20
    # The run's windows: its features' recorded settings, on the eval split.
    assert summary["prep_config"] == {"max_seq_length": 96, "doc_stride": 32, "max_query_length": 32, "split": "eval",
                                      "max_articles": None}
    assert summary["counts"]["features"] > summary["counts"]["questions"]  # contexts span several windows


def test_squad_python_api_answers_with_offsets_as_the_cli(squad, tmp_path):
    payload = json.loads(squad["questions"].read_text())
    inputs = [{"id": qa["id"], "question": qa["question"], "context": paragraph["context"]}
              for article in payload["data"] for paragraph in article["paragraphs"] for qa in paragraph["qas"]][:12]
    answers = load_predictor(squad["run"], device="cpu", n_best_size=5).predict(inputs)
    expected = json.loads((squad["eval"] / "predictions.json").read_text())
    assert [a["id"] for a in answers] == [i["id"] for i in inputs]
    for item, answer in zip(inputs, answers):
        assert answer["answer"] == expected[item["id"]]
        assert item["context"][answer["start"]:answer["end"]] == answer["answer"] and 0 < answer["score"] <= 1


# --- GAP ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gap(tmp_path_factory, tiny_encoder_dir):
    from tasks.gap.prep import GapPrepConfig

    root = tmp_path_factory.mktemp("predict-gap")
    lines = shared_data("gap/gap-development.tsv").read_text(encoding="utf-8").splitlines()
    data = root / "gap-dev-small.tsv"
    data.write_text("\n".join(lines[:31]) + "\n", encoding="utf-8")
    case = evaluated(root, "gap", tiny_encoder_dir, data, GapPrepConfig(max_seq_length=128))
    header = lines[0].split("\t")
    keep = [i for i, name in enumerate(header) if name not in ("A-coref", "B-coref")]
    case["rows"] = root / "test_stage_1.tsv"  # Kaggle's test layout: no coref columns
    case["rows"].write_text("".join("\t".join(line.split("\t")[i] for i in keep) + "\n" for line in lines[:31]),
                            encoding="utf-8")
    return case


def test_gap_predictions_without_labels_are_evaluations(gap):
    out, summary = predicted(gap, gap["rows"])
    assert sorted(summary["files"]) == ["gap_predictions.tsv", "submission.csv"]
    assert (out / "submission.csv").read_text() == (gap["eval"] / "submission.csv").read_text()
    assert (out / "gap_predictions.tsv").read_text() == (gap["eval"] / "gap_predictions.tsv").read_text()
    assert summary["counts"]["rows"] == 30


def test_gap_python_api_agrees_with_the_cli(gap):
    rows = read_csv(gap["rows"], delimiter="\t")[:4]
    inputs = [{"id": r["ID"], "text": r["Text"], "pronoun": r["Pronoun"], "pronoun_offset": int(r["Pronoun-offset"]),
               "a": r["A"], "a_offset": int(r["A-offset"]), "b": r["B"], "b_offset": int(r["B-offset"])} for r in rows]
    answers = load_predictor(gap["run"], device="cpu").predict(inputs)
    expected = read_csv(gap["eval"] / "submission.csv")[:4]
    assert [a["id"] for a in answers] == [r["ID"] for r in expected]
    # Other batches pad differently: equal up to float32 rounding.
    assert [a[name] for a in answers for name in ("A", "B", "NEITHER")] == pytest.approx(
        [float(r[name]) for r in expected for name in ("A", "B", "NEITHER")], rel=1e-5)
    assert all(a["answer"] == max(("A", "B", "NEITHER"), key=a.get) for a in answers)


# --- text classification --------------------------------------------------------------------


@pytest.fixture(scope="module")
def textclass(tmp_path_factory, tiny_encoder_dir):
    from tasks.textclass.prep import TextClassPrepConfig

    root = tmp_path_factory.mktemp("predict-textclass")
    rows = read_csv(shared_data("textclass/bbc-news/train.csv"))[:24]
    for row in rows:
        row["Text"] = " ".join(row["Text"].split()[:150])  # a few windows each at 64 tokens
    data = root / "news.csv"
    with open(data, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["ArticleId", "Text", "Category"])
        writer.writeheader()
        writer.writerows(rows)
    config = TextClassPrepConfig(max_seq_length=64, text_column="Text", label_column="Category", id_column="ArticleId")
    case = evaluated(root, "textclass", tiny_encoder_dir, data, config, fold_pool="max")
    case["texts"] = root / "new.csv"
    with open(case["texts"], "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["Text", "ArticleId"])
        writer.writeheader()
        writer.writerows({"Text": row["Text"], "ArticleId": row["ArticleId"]} for row in rows)
    return case


def test_textclass_cli_predictions_without_labels_are_evaluations(textclass, capsys):
    out = textclass["root"] / "predict-cli"
    assert eval_main(["predict", "textclass", "--model", str(textclass["run"]), "--data", str(textclass["texts"]),
                      "--out", str(out), "--text-column", "Text", "--id-column", "ArticleId", "--fold-pool", "max",
                      "--device", "cpu", "--nproc", "1", "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["files"] == ["predictions.csv"] and printed["counts"]["texts"] == 24
    evaluation = {row["id"]: row for row in read_csv(textclass["eval"] / "test_predictions.csv")}
    ours = read_csv(out / "predictions.csv")
    labels = json.loads((textclass["run"] / "train_config.json").read_text())["data_info"]["labels"]
    assert list(ours[0]) == ["id", "label", *(f"p_{label}" for label in labels)]
    assert [row["id"] for row in ours] == list(evaluation)
    for row in ours:
        assert row["label"] == evaluation[row["id"]]["prediction"]
        assert all(row[f"p_{label}"] == evaluation[row["id"]][f"p_{label}"] for label in labels)
    assert len({tuple(row[f"p_{label}"] for label in labels) for row in ours}) == len(ours)  # every text its own
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"]["texts_folded"] > 0 and summary["prep_config"]["fold"] is True
    assert summary["options"] == {"text_column": "Text", "text_pair_column": None, "id_column": "ArticleId",
                                  "format": None}


def test_textclass_bad_rows_are_reported_and_kept_in_place(textclass):
    data = textclass["root"] / "bad.jsonl"
    records = [{"id": "a", "body": "shares rose sharply"}, {"id": "b", "body": "  "}, {"id": "a", "body": "again"},
               {"id": "c", "body": "the match ended in a draw"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    spec = textclass["spec"]
    options = spec.eval.predict.options(text_column="body", id_column="id")
    out, summary = predicted(textclass, data, options)
    assert [(s["example_id"], s["reason"], s["where"]) for s in summary["skipped"]] == [
        ("b", "empty text", "line 2"), ("a", "duplicate id", "line 3")]
    assert summary["counts"]["skipped"] == 2 and summary["skip_reasons"] == {"empty text": 1, "duplicate id": 1}
    rows = read_csv(out / "predictions.csv")
    assert [row["id"] for row in rows] == ["a", "b", "a@line-3", "c"]
    assert [bool(row["label"]) for row in rows] == [True, False, False, True]


def test_textclass_python_api_agrees_with_the_cli(textclass):
    predictor = load_predictor(textclass["run"], device="cpu", fold_pool="max")
    texts = [row["Text"] for row in read_csv(textclass["texts"])][:5]
    answers = predictor.predict(texts + [{"id": "x", "text": texts[0]}])
    evaluation = read_csv(textclass["eval"] / "test_predictions.csv")[:5]
    assert [a["label"] for a in answers] == [row["prediction"] for row in evaluation] + [answers[0]["label"]]
    assert answers[-1]["id"] == "x" and answers[-1]["probabilities"] == pytest.approx(answers[0]["probabilities"])
    assert answers[0]["probabilities"][answers[0]["label"]] == pytest.approx(
        float(evaluation[0][f"p_{answers[0]['label']}"]), rel=1e-5)  # other batches: float32 rounding apart
    whole = predictor.predict_file(textclass["texts"], predictor.options(text_column="Text", id_column="ArticleId"))
    assert [r["label"] for r in whole.outcome.records][:5] == [a["label"] for a in answers[:5]]


def test_textclass_pair_mismatch_and_missing_column_are_errors(textclass, tmp_path):
    spec = textclass["spec"]
    with pytest.raises(ValueError, match="trained on single texts: drop --text-pair-column"):
        run_prediction(spec, textclass["run"], textclass["texts"], tmp_path / "out",
                       options=spec.eval.predict.options(text_column="Text", text_pair_column="ArticleId"),
                       device="cpu")
    with pytest.raises(ValueError, match="no column 'text'"):
        run_prediction(spec, textclass["run"], textclass["texts"], tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_predict_task_runs_once_and_is_cached(textclass, tmp_path):
    from pipeline import Predict

    params = dict(task="textclass", run_dir=str(textclass["run"]), data=str(textclass["texts"]), text_column="Text",
                  id_column="ArticleId", fold_pool="max", device="cpu")
    with luigi_config("bertflow", runs_dir=tmp_path / "runs"):
        task = Predict(**params)
        result = luigi.build([task], local_scheduler=True, detailed_summary=True, log_level="WARNING")
        assert result.status == LuigiStatusCode.SUCCESS, result.summary_text
        out = task.out_dir
        assert out.parent == tmp_path / "runs" / "predict" and out.name.startswith("textclass-")
        ours = read_csv(out / "predictions.csv")
        assert [row["label"] for row in ours] == [row["prediction"] for row in
                                                 read_csv(textclass["eval"] / "test_predictions.csv")]
        stamp = (out / "manifest.json").stat().st_mtime_ns
        again = luigi.build([Predict(**{**params, "batch_size": 3})], local_scheduler=True, detailed_summary=True,
                            log_level="WARNING")
        assert again.status == LuigiStatusCode.SUCCESS
        assert (out / "manifest.json").stat().st_mtime_ns == stamp  # found done: nothing re-ran
        assert Predict(**{**params, "fold_pool": "mean"}).out_dir != out  # a setting that changes predictions
        with pytest.raises(ValueError, match="task textclass has no eval setting n_best_size"):
            Predict(**{**params, "n_best_size": 3})


# --- GLUE -----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=["cola", "stsb"])
def glue(request, tmp_path_factory, tiny_encoder_dir):
    from tasks.glue.benchmark import TASKS
    from tasks.glue.prep import GluePrepConfig
    from tasks.glue.read import read_glue

    task = TASKS[request.param]
    root = tmp_path_factory.mktemp(f"predict-glue-{task.name}")
    lines = shared_data(f"glue/{task.folder}/dev.tsv").read_text(encoding="utf-8").splitlines()
    data = root / task.folder / "dev.tsv"  # evaluation takes the dev split by its name
    data.parent.mkdir()
    data.write_text("\n".join(lines[:21 if task.header else 20]) + "\n", encoding="utf-8")
    case = evaluated(root, "glue", tiny_encoder_dir, data, GluePrepConfig(glue_task=task.name, max_seq_length=64))
    examples, skipped, _ = read_glue(data, task)
    assert not skipped
    index, text, pair = task.test_columns
    case["test"] = root / "test.tsv"  # GLUE's test layout: index, sentences, no label (CoLA's with a header)
    case["test"].write_text("\t".join(c for c in (index, text, pair) if c) + "\n" + "".join(
        "\t".join([e.example_id, e.text] + ([e.text_pair] if pair else [])) + "\n" for e in examples), encoding="utf-8")
    case["task"] = task
    return case


def test_glue_test_file_predictions_are_evaluations_in_the_server_format(glue):
    task = glue["task"]
    out, summary = predicted(glue, glue["test"])
    name = f"{task.folder}.tsv"
    assert summary["files"] == [name] and summary["counts"]["rows"] == 20
    ours = read_csv(out / name, delimiter="\t")
    evaluation = read_csv(glue["eval"] / "test_predictions.csv")
    assert list(ours[0]) == ["index", "prediction"]
    assert [(row["index"], row["prediction"]) for row in ours] == [(row["id"], row["prediction"]) for row in evaluation]
    if not task.regression:
        assert {row["prediction"] for row in ours} <= set(task.labels)
    # The Python API: sentences (pairs) in, the same answers out.
    tests = read_csv(glue["test"], delimiter="\t")[:3]
    index, text, pair = task.test_columns
    answers = load_predictor(glue["run"], device="cpu").predict(
        [{"text": r[text], **({"text_pair": r[pair]} if pair else {})} for r in tests])
    # Other batches pad differently: equal up to float32 rounding.
    if task.regression:
        assert [a["value"] for a in answers] == pytest.approx([float(r["prediction"]) for r in ours[:3]], rel=1e-5)
    else:
        assert [a["label"] for a in answers] == [r["prediction"] for r in ours[:3]]


@pytest.mark.fast
def test_glue_submission_names():
    from tasks.glue.benchmark import TASKS

    assert [TASKS[name].submission_name("test") for name in ("cola", "sst2", "stsb", "rte", "qqp")] == [
        "CoLA", "SST-2", "STS-B", "RTE", "QQP"]
    mnli = TASKS["mnli"]
    assert [mnli.submission_name(s) for s in ("test_matched", "test_mismatched", "diagnostic")] == [
        "MNLI-m", "MNLI-mm", "AX"]


# --- RACE -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def race(tmp_path_factory, tiny_encoder_dir):
    from tasks.race.prep import RacePrepConfig

    root = tmp_path_factory.mktemp("predict-race")
    lines = shared_data("race/dev.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    data = root / "dev.jsonl"
    data.write_text("\n".join(lines) + "\n", encoding="utf-8")
    case = evaluated(root, "race", tiny_encoder_dir, data, RacePrepConfig(max_seq_length=128))
    case["questions"] = root / "new.jsonl"
    case["questions"].write_text("".join(json.dumps({k: v for k, v in json.loads(line).items() if k != "answers"})
                                         + "\n" for line in lines), encoding="utf-8")
    case["lines"] = lines
    return case


def test_race_predictions_without_answers_are_evaluations(race):
    out, summary = predicted(race, race["questions"])
    assert summary["files"] == ["answers.json"]
    ours = json.loads((out / "answers.json").read_text())
    assert ours == json.loads((race["eval"] / "answers.json").read_text())
    assert len(ours) == summary["counts"]["questions"] > 5


def test_race_python_api_takes_articles_and_questions(race):
    record = json.loads(race["lines"][0])
    predictor = load_predictor(race["run"], device="cpu")
    answers = predictor.predict([{"id": record["id"].removesuffix(".txt"), "article": record["article"],
                                  "questions": record["questions"], "options": record["options"]},
                                 {"article": record["article"], "question": record["questions"][1],
                                  "options": record["options"][1]}])
    expected = json.loads((race["eval"] / "answers.json").read_text())
    assert [a["id"] for a in answers[:-1]] == list(expected)[:len(record["questions"])]
    # Other batches pad differently: equal up to float32 rounding.
    assert [a["answer"] for a in answers[:-1]] == [expected[a["id"]]["answer"] for a in answers[:-1]]
    assert [p for a in answers[:-1] for p in a["probabilities"]] == pytest.approx(
        [p for a in answers[:-1] for p in expected[a["id"]]["probabilities"]], rel=1e-5)
    assert answers[-1]["id"] == "input1-0" and answers[-1]["probabilities"] == pytest.approx(answers[1]["probabilities"])
