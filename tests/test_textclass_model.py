"""The text classifier on a tiny in-process BERT: shapes, training signal, padding, and the Hugging Face export.

The export tests save a tiny random classifier initialised wide (std 0.2 instead of 0.02, head
weight std 1) and calibrated (temperature 2), so different texts get different, well-separated
classes and the folded temperature is visible: top labels are arbitrary but never decided by float noise between the two
implementations.
"""

from __future__ import annotations

from tasks import get_task
import shutil

import pyarrow as pa
import pytest
import torch
from transformers import BertConfig, BertModel

from train.model import TOKENIZER_FILES
from train.testing import TINY_BERT
from tasks.textclass.model import (
    ClassifierHead, TextClassifier, build_model, collate_textclass, eval_counts, loss,
    save_sequence_classification, synthetic_data_info, synthetic_textclass_table,
)

pytestmark = [pytest.mark.fast, pytest.mark.usefixtures("one_cpu_thread")]

NAMES = ["business", "sport", "tech"]
CLASSIFY = {"labels": NAMES, "label_type": "str", "text_column": "Text", "label_column": "Category",
            "text_pair_column": None, "format": "csv"}
REGRESS = {"labels": [], "label_type": "float", "text_column": "text", "label_column": "score",
           "text_pair_column": None, "format": "csv"}
TEXTS = ["Shares fell sharply after the quarterly results.", "The striker scored twice in the final.",
         "A new phone chip doubles battery life.", "Parliament debated the budget late into the night.",
         "ok"]


def tiny_encoder(seed: int = 0, dropout: float = 0.0, pooler: bool = True, **overrides) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        **{**TINY_BERT, **overrides})
    return BertModel(config, add_pooling_layer=pooler)


def tiny_model(data_info: dict, seed: int = 0, dropout: float = 0.0, **overrides) -> TextClassifier:
    return build_model("linear", tiny_encoder(seed, dropout, **overrides), data_info=data_info)


@pytest.mark.parametrize("regression", [False, True])
def test_forward_collate_loss_and_counts_shapes(regression):
    info = synthetic_data_info(3, regression=regression)
    model = tiny_model(info).eval()
    table = synthetic_textclass_table(6, seed=1, regression=regression)
    batch = collate_textclass(table, pad_to_multiple_of=8)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["token_type_ids"].shape
    assert batch["input_ids"].shape[1] % 8 == 0 and batch["input_ids"].dtype == torch.long
    assert batch["label"].dtype == (torch.float32 if regression else torch.long)
    assert batch["feature_id"].tolist() == list(range(6))
    assert (model.task, model.head_name, model.regression) == ("textclass", "linear", regression)
    assert isinstance(model.head, ClassifierHead) and model.head.temperature.item() == 1.0
    with torch.no_grad():
        logits = model(**batch)  # the batch's label and id keys are accepted and ignored
    assert logits.shape == (6, 1 if regression else 3) and logits.dtype == torch.float32
    value = loss(logits, batch)
    assert value.shape == () and torch.isfinite(value)
    counts = eval_counts(logits, batch)
    if regression:
        assert counts == {}
        torch.testing.assert_close(value, torch.nn.functional.mse_loss(logits[:, 0], batch["label"]))
    else:
        assert set(counts) == {"accuracy"} and 0 <= int(counts["accuracy"]) <= 6


def test_synthetic_table_follows_the_feature_contract():
    table = synthetic_textclass_table(5, seed=2)
    assert table.schema.names == ["feature_id", "example_id", "example_index", "input_ids", "token_type_ids",
                                  "label", "window_index", "num_windows"]
    types = {f.name: f.type for f in table.schema}
    assert types["feature_id"] == pa.int64() and types["example_index"] == pa.int32()
    assert types["input_ids"] == pa.list_(pa.int32()) and types["token_type_ids"] == pa.list_(pa.int8())
    assert types["label"] == pa.int32() and types["window_index"] == types["num_windows"] == pa.int16()
    assert table.column("window_index").to_pylist() == [0] * 5 and table.column("num_windows").to_pylist() == [1] * 5
    assert synthetic_textclass_table(5, seed=2, regression=True).schema.field("label").type == pa.float32()
    # every row carries its label's marker token
    for ids, label in zip(table.column("input_ids").to_pylist(), table.column("label").to_pylist()):
        assert ids[0] == 101 and ids[-1] == 102 and 1000 + label in ids


@pytest.mark.parametrize("regression", [False, True])
def test_loss_falls_and_every_parameter_gets_a_gradient(regression):
    model = tiny_model(synthetic_data_info(3, regression=regression), dropout=0.1).train()
    batch = collate_textclass(synthetic_textclass_table(32, seed=3, regression=regression))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        value = loss(model(**batch), batch)
        value.backward()
        if step == 0:  # DDP without find_unused_parameters needs a gradient on every parameter, pooler included
            assert [name for name, p in model.named_parameters() if p.grad is None] == []
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(value.item())
    # Half the start: below what fitting the label mean alone reaches, so the marker tokens were learned.
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses


def test_padding_does_not_change_logits():
    model = tiny_model(CLASSIFY).eval()
    table = synthetic_textclass_table(6, seed=4, min_len=5, max_len=40)
    tight, wide = collate_textclass(table), collate_textclass(table, pad_to_multiple_of=128)
    assert tight["input_ids"].shape[1] == 40 and wide["input_ids"].shape[1] == 128
    with torch.no_grad():
        torch.testing.assert_close(model(**tight), model(**wide))


def test_build_model_needs_labels_a_pooler_and_a_known_head():
    with pytest.raises(ValueError, match="labels"):
        tiny_model({})
    with pytest.raises(ValueError, match="labels"):
        tiny_model({**CLASSIFY, "labels": []})
    with pytest.raises(ValueError, match="the training features have one class only, 'sport' .column 'Category'."):
        tiny_model({**CLASSIFY, "labels": ["sport"], "label_column": "Category"})
    with pytest.raises(ValueError, match="pooler"):
        build_model("linear", tiny_encoder(pooler=False), data_info=CLASSIFY)
    with pytest.raises(ValueError, match="head"):
        build_model("mean", tiny_encoder(), data_info=CLASSIFY)
    assert tiny_model(CLASSIFY).labels == tuple(NAMES)
    assert tiny_model({**CLASSIFY, "labels": [3, 1, 2], "label_type": "int"}).labels == ("3", "1", "2")
    regressor = tiny_model(REGRESS)
    assert (regressor.num_labels, regressor.labels) == (1, ("score",))


def test_temperature_round_trips_through_head_state(tmp_path):
    from safetensors.torch import load_file, save_file

    model = tiny_model(CLASSIFY).eval()
    model.head.temperature.fill_(2.5)
    state = {k: v.detach().contiguous() for k, v in model.head.state_dict().items()}
    assert set(state) == {"weight", "bias", "temperature"}
    save_file(state, str(tmp_path / "head.safetensors"))
    loaded = tiny_model(CLASSIFY, seed=1).eval()
    loaded.encoder.load_state_dict(model.encoder.state_dict())
    loaded.head.load_state_dict(load_file(str(tmp_path / "head.safetensors")), strict=True)
    assert loaded.head.temperature.item() == 2.5
    batch = collate_textclass(synthetic_textclass_table(4, seed=5))
    with torch.no_grad():
        logits = model(**batch)
        torch.testing.assert_close(loaded(**batch), logits)
        model.head.temperature.fill_(1.0)
        torch.testing.assert_close(model(**batch), logits * 2.5)


def save_tiny_classifier(folder, data_info: dict, tokenizer_dir) -> TextClassifier:
    """A random classifier with a spread-out, calibrated head, saved as a Hugging Face folder with tokenizer files."""
    # At the usual init (std 0.02) a random encoder pools every text to nearly the same vector.
    model = tiny_model(data_info, dropout=0.1, initializer_range=0.2).eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)
    torch.nn.init.zeros_(model.head.bias)  # a large bias would pick one class for every text
    if not model.regression:
        model.head.temperature.fill_(2.0)
    save_sequence_classification(model, folder)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, folder / name)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tokenizer_dir):
    root = tmp_path_factory.mktemp("textclass_export")
    return {
        "classify": (root / "classify", save_tiny_classifier(root / "classify", CLASSIFY, tokenizer_dir)),
        "regress": (root / "regress", save_tiny_classifier(root / "regress", REGRESS, tokenizer_dir)),
    }


@pytest.mark.parametrize("kind", ["classify", "regress"])
def test_auto_model_loads_every_weight_and_gives_our_logits(exported, kind):
    from transformers import AutoModelForSequenceClassification

    folder, model = exported[kind]
    hf_model, info = AutoModelForSequenceClassification.from_pretrained(
        str(folder), output_loading_info=True, local_files_only=True)
    assert type(hf_model).__name__ == "BertForSequenceClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    config = hf_model.config
    if kind == "classify":
        assert config.id2label == dict(enumerate(NAMES)) and config.label2id == {n: i for i, n in enumerate(NAMES)}
        assert config.problem_type == "single_label_classification" and config.num_labels == 3
    else:
        assert config.id2label == {0: "score"} and config.problem_type == "regression" and config.num_labels == 1

    batch = collate_textclass(synthetic_textclass_table(6, seed=6, min_len=5, max_len=30))
    assert bool((batch["attention_mask"] == 0).any())
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode():
        ours = model(**inputs)
        theirs = hf_model.eval()(**inputs).logits
    torch.testing.assert_close(theirs, ours)  # the classifier's temperature is folded into the saved weights


def test_our_encoder_loader_reads_the_exported_folder(exported):
    from train.model import load_encoder

    folder, model = exported["classify"]
    encoder = load_encoder(folder, pooler=True)
    saved = model.encoder.state_dict()
    assert encoder.state_dict().keys() == saved.keys() and "pooler.dense.weight" in saved
    for key, value in encoder.state_dict().items():
        torch.testing.assert_close(value, saved[key], rtol=0, atol=0)


def test_text_classification_pipeline_agrees_with_our_model(exported, hf_tokenizer):
    from transformers import pipeline

    folder, model = exported["classify"]
    classify = pipeline("text-classification", model=str(folder), tokenizer=str(folder), device="cpu")
    answers = classify(TEXTS)
    ours = []
    for text in TEXTS:
        encoded = hf_tokenizer(text, return_tensors="pt")
        with torch.inference_mode():
            probs = model(**{k: encoded[k] for k in ("input_ids", "attention_mask", "token_type_ids")}).softmax(-1)[0]
        ours.append((NAMES[int(probs.argmax())], float(probs.max())))
    assert [a["label"] for a in answers] == [label for label, _ in ours]
    assert [a["score"] for a in answers] == pytest.approx([score for _, score in ours], abs=1e-5)
    assert len({label for label, _ in ours}) > 1  # the check could not pass with a constant answer


@pytest.mark.parametrize("family", ["mpnet", "roberta"])
def test_roberta_style_export_keeps_the_pooler_in_the_classifier_and_round_trips(family, mpnet_tokenizer_dir,
                                                                                  tmp_path):
    """MPNet / RoBERTa sequence classifiers have no pooler; their head is dense + tanh + out_proj: our pooler's
    dense goes there, and our own loader (load_finetuned) puts it back instead of a freshly initialised one;
    so does a new fine-tune that starts from the exported folder."""
    import json

    from transformers import AutoModelForSequenceClassification

    from train.model import build_model as build_to_finetune, load_encoder, load_finetuned, save_finetuned
    from train.testing import make_tiny_encoder_dir

    encoder_dir = make_tiny_encoder_dir(tmp_path / "encoder", mpnet_tokenizer_dir,
                                        model_type="roberta" if family == "roberta" else None, dropout=0.0)
    torch.manual_seed(0)
    model = build_model("linear", load_encoder(encoder_dir, pooler=True), data_info=CLASSIFY).eval()
    torch.nn.init.normal_(model.encoder.pooler.dense.weight, std=0.5)  # unlike any fresh initialisation
    torch.nn.init.normal_(model.head.weight, std=1.0)
    model.head.temperature.fill_(2.0)
    save_finetuned(model, get_task("textclass").train, tmp_path / "run", encoder_dir)
    (tmp_path / "run" / "train_config.json").write_text(
        json.dumps({"task": "textclass", "head": "linear", "data_info": CLASSIFY}), encoding="utf-8")

    hf_model, info = AutoModelForSequenceClassification.from_pretrained(
        str(tmp_path / "run" / "model"), output_loading_info=True, local_files_only=True)
    assert type(hf_model).__name__ == f"{'Roberta' if family == 'roberta' else 'MPNet'}ForSequenceClassification"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert getattr(hf_model.base_model, "pooler", None) is None
    loaded, _ = load_finetuned(tmp_path / "run", get_task("textclass").train)
    assert not torch.equal(load_encoder(tmp_path / "run" / "model", pooler=True).pooler.dense.weight,
                           model.encoder.pooler.dense.weight)  # the loader alone cannot know the pooler
    batch = collate_textclass(synthetic_textclass_table(6, seed=6, min_len=5, max_len=30), pad_id=1)
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask")}
    with torch.inference_mode():
        ours = model(**inputs)
        torch.testing.assert_close(hf_model.eval()(**inputs).logits, ours)  # temperature folded in
        torch.testing.assert_close(loaded(**inputs), ours)
    assert float(ours.std(0).max()) > 1e-3  # the texts' logits differ: equal logits are not a constant's
    again = build_to_finetune(get_task("textclass").train, "linear", tmp_path / "run" / "model", data_info=CLASSIFY)
    torch.testing.assert_close(again.encoder.pooler.dense.weight, model.encoder.pooler.dense.weight)
    torch.testing.assert_close(again.encoder.pooler.dense.bias, model.encoder.pooler.dense.bias)
