"""Evaluation refuses what it must not score: mismatched tokenizers, features or data, truncated
files, wrong prediction ids, missing configs; a failed run keeps the previous output."""

from __future__ import annotations

from tasks import get_task
import json
import shutil

import pytest
import torch
from torch import nn

from eval.__main__ import main as eval_main
from tasks.squad.evaluate import SquadEvalConfig
from eval.inference import InputMismatchError
from tasks.squad.score import score_squad_file
from tasks.squad.read import SquadFormatError, load_squad_data
from tests.conftest import shared_data, fine_tune
from tests.test_eval_run import gap_run, squad_v1, subset_squad  # noqa: F401 - module fixtures, shared


def test_tokenizer_mismatch_is_refused_without_output(squad_v1, tmp_path):
    model = tmp_path / "model-other-vocab"
    shutil.copytree(squad_v1["model"], model)
    with open(model / "model" / "vocab.txt", "a", encoding="utf-8") as handle:
        handle.write("[extra]\n")
    out = tmp_path / "out"
    from eval.run import run_evaluation

    with pytest.raises(InputMismatchError, match="tokenizer mismatch"):
        run_evaluation(get_task("squad"), model, squad_v1["features"], squad_v1["data"], out, device="cpu")
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    assert eval_main(["squad", "--model", str(model), "--features", str(squad_v1["features"]),
                      "--data", str(squad_v1["data"]), "--out", str(out)]) == 1


def test_features_from_other_data_or_task_are_refused(squad_v1, gap_run, tmp_path):
    from eval.run import run_evaluation

    other = subset_squad(shared_data("squad/dev-v1.1.json"), tmp_path / "other.json", slice(2, 3))
    with pytest.raises(InputMismatchError, match="not from the --data file"):
        run_evaluation(get_task("squad"), squad_v1["model"], squad_v1["features"], other, tmp_path / "a", device="cpu")
    with pytest.raises(InputMismatchError, match="holds 'gap' features"):
        run_evaluation(get_task("squad"), squad_v1["model"], gap_run["features"], squad_v1["data"], tmp_path / "b", device="cpu")
    with pytest.raises(InputMismatchError, match="trained for 'squad'"):
        run_evaluation(get_task("gap"), squad_v1["model"], gap_run["features"], gap_run["data"], tmp_path / "c", device="cpu")
    assert not any(tmp_path.glob("[abc]"))


def test_truncated_data_file(squad_v1, tmp_path):
    text = squad_v1["data"].read_text(encoding="utf-8")
    cut = tmp_path / "cut.json"
    cut.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(SquadFormatError, match="malformed JSON.*truncated"):
        load_squad_data(cut)
    assert eval_main(["score-squad", "--data", str(cut), "--predictions", str(cut)]) == 1


def test_failed_run_keeps_the_previous_output(squad_v1, tmp_path, monkeypatch):
    import eval.run

    out = tmp_path / "eval"
    eval.run.run_evaluation(get_task("squad"), squad_v1["model"], squad_v1["features"], squad_v1["data"], out, device="cpu")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    class Broken(nn.Module):
        def forward(self, *args, **kwargs):
            raise RuntimeError("device lost halfway")

    monkeypatch.setattr(eval.run, "load_model", lambda model_dir, spec, device: (Broken(), {}))
    with pytest.raises(RuntimeError, match="halfway"):
        eval.run.run_evaluation(get_task("squad"), squad_v1["model"], squad_v1["features"], squad_v1["data"], out, device="cpu")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["eval"]  # no temp folder left behind


def test_prediction_files_with_wrong_ids(squad_v1, tmp_path):
    data = load_squad_data(squad_v1["data"])
    predictions = {qid: "x" for qid in data.question_ids}
    missing = dict(list(predictions.items())[1:])
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    assert eval_main(["score-squad", "--data", str(squad_v1["data"]), "--predictions", str(tmp_path / "missing.json")]) == 1
    extra = {**predictions, "not-a-question": "x"}
    (tmp_path / "extra.json").write_text(json.dumps(extra))
    from tasks.squad.metrics import PredictionIdError

    with pytest.raises(PredictionIdError, match="not in the data"):
        score_squad_file(squad_v1["data"], tmp_path / "extra.json")


def test_evaluates_what_train_wrote(gap_run, tmp_path, tiny_encoder_dir):
    """train.loop's real outputs (model/, head, train_config.json, metrics.json, tb/) feed eval."""
    from train.config import TrainConfig
    from train.dist import single_process

    tiny = tiny_encoder_dir
    features = str(gap_run["features"])
    config = TrainConfig(task="gap", head="concat", features_dir=features, eval_features_dir=features,
                         run_dir=str(tmp_path / "train"), model_dir=str(tiny), precision="fp32",
                         global_batch_size=8, epochs=2, lr=1e-3, device="cpu", progress_bar=False,
                         log_every_n_steps=1)
    fine_tune(config, single_process("cpu"))
    out = tmp_path / "eval"
    assert eval_main(["gap", "--model", str(tmp_path / "train"), "--features", features,
                      "--data", str(gap_run["data"]), "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["train_config"]["head"] == "concat"
    report = (out / "report.md").read_text()
    assert "| sequences_per_second |" in report and "| tokens_per_second |" in report
    assert "| train/loss |" in report and "| train/lr |" in report  # curves from train's TensorBoard logs
    assert "Evaluation during training, per epoch" in report
    assert (out / "training_curves.png").is_file()


def _refused(args: list[str], out) -> None:
    """The CLI exits 1 (an error message, no traceback) and writes nothing, not even a temp folder."""
    assert eval_main([*args, "--out", str(out)]) == 1
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))


def _squad_args(model, features, data) -> list[str]:
    return ["squad", "--model", str(model), "--features", str(features), "--data", str(data), "--device", "cpu"]


def test_train_split_features_are_refused(squad_v1, tmp_path, tokenizer_dir):
    from eval.run import run_evaluation
    from tasks.squad.prep import SquadPrepConfig, prepare_squad

    train_split = tmp_path / "train-features"
    prepare_squad(squad_v1["data"], train_split, tokenizer_dir,
                  SquadPrepConfig(max_seq_length=96, doc_stride=32, max_query_length=32, split="train"), nproc=1)
    with pytest.raises(InputMismatchError, match="holds the 'train' split; evaluation needs features built with --split eval"):
        run_evaluation(get_task("squad"), squad_v1["model"], train_split, squad_v1["data"], tmp_path / "out", device="cpu")
    _refused(_squad_args(squad_v1["model"], train_split, squad_v1["data"]), tmp_path / "out")


def test_truncated_arrow_features_are_refused(squad_v1, tmp_path):
    from eval.run import run_evaluation

    features = tmp_path / "features"
    shutil.copytree(squad_v1["features"], features)
    arrow = sorted(features.glob("*.arrow"))[-1]
    arrow.write_bytes(arrow.read_bytes()[: arrow.stat().st_size * 2 // 3])
    with pytest.raises(ValueError, match=rf"{arrow.name}: not a readable Arrow IPC file, truncated or corrupted"):
        run_evaluation(get_task("squad"), squad_v1["model"], features, squad_v1["data"], tmp_path / "out", device="cpu")
    _refused(_squad_args(squad_v1["model"], features, squad_v1["data"]), tmp_path / "out")


@pytest.mark.parametrize("weights", ["model/model.safetensors", "head.safetensors"])
def test_truncated_safetensors_are_refused(squad_v1, tmp_path, weights):
    from eval.run import run_evaluation

    model = tmp_path / "model-dir"
    shutil.copytree(squad_v1["model"], model)
    path = model / weights
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf"{path.name}: truncated or corrupted safetensors file"):
        run_evaluation(get_task("squad"), model, squad_v1["features"], squad_v1["data"], tmp_path / "out", device="cpu")
    _refused(_squad_args(model, squad_v1["features"], squad_v1["data"]), tmp_path / "out")


def test_gap_features_from_another_tsv_are_refused(gap_run, tmp_path):
    from eval.run import run_evaluation

    lines = shared_data("gap/gap-development.tsv").read_text(encoding="utf-8").splitlines()
    other = tmp_path / "other.tsv"
    other.write_text("\n".join(lines[:1] + lines[41:81]) + "\n", encoding="utf-8")  # same header, other rows
    with pytest.raises(InputMismatchError, match="not from the --data file given"):
        run_evaluation(get_task("gap"), gap_run["model"], gap_run["features"], other, tmp_path / "out", device="cpu")
    _refused(["gap", "--model", str(gap_run["model"]), "--features", str(gap_run["features"]), "--data", str(other),
              "--device", "cpu"], tmp_path / "out")


def test_squad_v2_data_follows_the_data_and_refuses_an_explicit_v1(squad_v1, tmp_path, tokenizer_dir):
    from eval.run import run_evaluation
    from tasks.squad.prep import SquadPrepConfig, prepare_squad

    data = subset_squad(shared_data("squad/dev-v2.0.reconstructed.json"), tmp_path / "dev2.json", slice(0, 1), 1)
    assert load_squad_data(data).has_impossible
    features = tmp_path / "features"
    prepare_squad(data, features, tokenizer_dir, SquadPrepConfig(max_seq_length=128, doc_stride=48, split="eval"),
                  nproc=1)
    # No flag: the data decides (it has is_impossible questions), so v2 scoring and null_odds.json.
    summary = run_evaluation(get_task("squad"), squad_v1["model"], features, data, tmp_path / "auto", device="cpu")
    assert summary["config"]["version_2_with_negative"] is True and "NoAns_total" in summary["metrics"]
    assert (tmp_path / "auto" / "null_odds.json").is_file()
    # Explicitly v1.1 on v2.0 data: an error, since v1.1 scoring has no gold for unanswerable questions.
    with pytest.raises(ValueError, match="unanswerable questions .*drop --no-version-2-with-negative"):
        run_evaluation(get_task("squad"), squad_v1["model"], features, data, tmp_path / "v1", SquadEvalConfig(version_2_with_negative=False),
                       device="cpu")
    _refused([*_squad_args(squad_v1["model"], features, data), "--no-version-2-with-negative"], tmp_path / "v1")


def test_missing_train_config_is_refused(squad_v1, tmp_path):
    from eval.run import run_evaluation

    model = tmp_path / "model-dir"
    shutil.copytree(squad_v1["model"], model)
    (model / "train_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="no train_config.json; --model takes the folder train wrote"):
        run_evaluation(get_task("squad"), model, squad_v1["features"], squad_v1["data"], tmp_path / "out", device="cpu")
    _refused(_squad_args(model, squad_v1["features"], squad_v1["data"]), tmp_path / "out")


def test_cuda_device_without_cuda_is_refused(squad_v1, tmp_path, monkeypatch):
    from eval.run import run_evaluation

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="device 'cuda' requested but CUDA is not available"):
        run_evaluation(get_task("squad"), squad_v1["model"], squad_v1["features"], squad_v1["data"], tmp_path / "out", device="cuda")
    args = _squad_args(squad_v1["model"], squad_v1["features"], squad_v1["data"])
    _refused([*args[:-1], "cuda:0"], tmp_path / "out")
