"""End to end with non-BERT encoders: prep -> a few training steps -> evaluation, on real SQuAD and GAP.

A tiny random-weight MPNet built from ../shared/models/all-mpnet-base-v2-tokenizer's config
(2 layers, hidden 64): features in its own layout (``<s> q </s></s> c </s>``, pad 1, no token
types), the span and GAP heads trained through ``train.loop.train``, and every question / row
scored by ``eval.run.run_evaluation``. The SQuAD run's ``model/`` folder is Hugging Face's
``MPNetForQuestionAnswering`` and gives our logits.
"""

from __future__ import annotations

from tasks import get_task
import csv
import json

import numpy as np
import pytest
import torch

from eval.run import run_evaluation
from prep.features import open_features
from tasks.gap.prep import prepare_gap
from tasks.squad.prep import SquadPrepConfig, prepare_squad
from train.config import TrainConfig
from train.dist import single_process
from train.model import load_finetuned
from train.testing import make_tiny_encoder_dir
from tests.conftest import shared_data, fine_tune

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def mpnet(tmp_path_factory, mpnet_tokenizer_dir):
    return make_tiny_encoder_dir(tmp_path_factory.mktemp("mpnet") / "model", mpnet_tokenizer_dir, dropout=0.0)


def train_config(task, head, features, out, model_dir, **overrides) -> TrainConfig:
    values = dict(task=task, head=head, features_dir=str(features), run_dir=str(out), model_dir=str(model_dir),
                  precision="fp32", global_batch_size=8, max_steps=4, lr=2e-3, log_every_n_steps=1,
                  progress_bar=False, save_every_n_steps=None)
    return TrainConfig(**{**values, **overrides})


def test_squad_end_to_end_with_mpnet(tmp_path, mpnet):
    source = json.loads(shared_data("squad/dev-v1.1.json").read_text(encoding="utf-8"))
    source["data"] = [{**source["data"][0], "paragraphs": source["data"][0]["paragraphs"][:4]}]
    data = tmp_path / "squad-small.json"
    data.write_text(json.dumps(source), encoding="utf-8")
    features = {}
    for split in ("train", "eval"):
        features[split] = tmp_path / f"squad-{split}"
        prepare_squad(data, features[split], mpnet, SquadPrepConfig(max_seq_length=192, doc_stride=64, split=split), nproc=1)
    table = open_features(features["train"])
    row = table.slice(0, 1).to_pylist()[0]
    assert row["input_ids"][0] == 0 and row["input_ids"][-1] == 2 and 1 not in row["input_ids"]
    assert [2, 2] == row["input_ids"][row["input_ids"].index(2):][:2]  # </s></s> between question and context
    assert not any(any(types) for types in table.column("token_type_ids").to_pylist())

    metrics = fine_tune(train_config("squad", "span", features["train"], tmp_path / "run", mpnet,
                                 eval_features_dir=str(features["eval"])), single_process("cpu"))
    assert metrics["steps"] == 4 and np.isfinite(metrics["final_train_loss"])
    summary = run_evaluation(get_task("squad"), tmp_path / "run", features["eval"], data, tmp_path / "eval", device="cpu")
    predictions = json.loads((tmp_path / "eval" / "predictions.json").read_text())
    questions = sum(len(p["qas"]) for p in source["data"][0]["paragraphs"])
    assert len(predictions) == questions and 0.0 <= summary["metrics"]["f1"] <= 100.0

    # OUT/model is Hugging Face's MPNet QA model, and it computes our start/end logits
    from transformers import AutoModelForQuestionAnswering

    from tasks.squad.model import collate_squad

    ours, _ = load_finetuned(tmp_path / "run", get_task("squad").train)
    theirs = AutoModelForQuestionAnswering.from_pretrained(str(tmp_path / "run" / "model")).eval()
    assert type(theirs).__name__ == "MPNetForQuestionAnswering"
    batch = collate_squad(table.slice(0, 4), pad_id=1)
    with torch.no_grad():
        start, end = ours(**batch)
        hf = theirs(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    real = batch["attention_mask"].bool()
    torch.testing.assert_close(start[real], hf.start_logits[real])
    torch.testing.assert_close(end[real], hf.end_logits[real])


def test_gap_end_to_end_with_mpnet(tmp_path, mpnet):
    source = shared_data("gap/gap-validation.tsv")
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    data = tmp_path / "gap-small.tsv"
    data.write_text("".join(lines[:49]), encoding="utf-8")  # header + 48 rows
    prepare_gap(data, tmp_path / "gap", mpnet, nproc=1)
    metrics = fine_tune(train_config("gap", "multiply", tmp_path / "gap", tmp_path / "run", mpnet,
                                 eval_features_dir=str(tmp_path / "gap"), select_best=True, calibrate=True,
                                 max_steps=None, epochs=2, global_batch_size=16), single_process("cpu"))
    assert metrics["steps"] == 6 and metrics["calibration"] is not None
    summary = run_evaluation(get_task("gap"), tmp_path / "run", tmp_path / "gap", data, tmp_path / "eval", device="cpu")
    with open(tmp_path / "eval" / "submission.csv", encoding="utf-8", newline="") as handle:
        submission = list(csv.DictReader(handle))
    assert len(submission) == 48
    assert all(abs(sum(float(r[k]) for k in ("A", "B", "NEITHER")) - 1) < 1e-4 for r in submission)
    assert np.isfinite(summary["metrics"]["log_loss"])
