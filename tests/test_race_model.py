"""The RACE heads on a tiny in-process BERT: shapes, both heads learn, padding, and the mc head's Hugging Face export."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import BertConfig, BertModel

from train.model import TOKENIZER_FILES
from train.testing import TINY_BERT
from tasks import get_task
from tasks.race.model import (
    DumaHead, build_model, collate_race, eval_counts, loss, save_multiple_choice, span_mask, synthetic_race_table,
)

pytestmark = [pytest.mark.fast, pytest.mark.usefixtures("one_cpu_thread")]


def tiny_encoder(seed: int = 0, dropout: float = 0.0, pooler: bool = True, **overrides) -> BertModel:
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
                        **{**TINY_BERT, **overrides})
    return BertModel(config, add_pooling_layer=pooler)


@pytest.mark.parametrize("head", ["mc", "duma"])
def test_forward_collate_loss_and_counts(head):
    model = build_model(head, tiny_encoder()).eval()
    table = synthetic_race_table(5, seed=1)
    batch = collate_race(table, pad_to_multiple_of=8)
    assert batch["input_ids"].shape[:2] == (5, 4) and batch["input_ids"].shape[2] % 8 == 0
    assert batch["attention_mask"].shape == batch["token_type_ids"].shape == batch["input_ids"].shape
    assert batch["passage_start"].shape == batch["qa_end"].shape == (5, 4)
    # the mask covers each sequence's own tokens
    lengths = [[len(seq) for seq in row] for row in table.column("input_ids").to_pylist()]
    assert batch["attention_mask"].sum(-1).tolist() == lengths
    with torch.no_grad():
        logits = model(**batch)  # label and feature_id are accepted and ignored
    assert logits.shape == (5, 4) and logits.dtype == torch.float32
    assert loss(logits, batch).shape == () and 0 <= int(eval_counts(logits, batch)["accuracy"]) <= 5


@pytest.mark.parametrize("head", ["mc", "duma"])
def test_both_heads_learn_and_every_trained_parameter_gets_a_gradient(head):
    model = build_model(head, tiny_encoder(dropout=0.1)).train()
    batch = collate_race(synthetic_race_table(16, seed=3, min_len=6, max_len=16))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    losses = []
    for step in range(20):
        value = loss(model(**batch), batch)
        value.backward()
        if step == 0:  # DDP without find_unused_parameters: every parameter that trains gets a gradient
            assert [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None] == []
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(value.item())
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    if head == "duma":
        assert not any(p.requires_grad for p in model.encoder.pooler.parameters())  # unused, frozen


@pytest.mark.parametrize("head", ["mc", "duma"])
def test_padding_does_not_change_logits(head):
    model = build_model(head, tiny_encoder()).eval()
    table = synthetic_race_table(4, seed=4)
    tight, wide = collate_race(table), collate_race(table, pad_to_multiple_of=96)
    assert wide["input_ids"].shape[2] == 96
    with torch.no_grad():
        torch.testing.assert_close(model(**tight), model(**wide), atol=1e-5, rtol=1e-5)


def test_duma_attends_only_across_passage_and_question_option():
    """Changing a token outside both spans (a special token's embedding here) cannot move DUMA's
    pooled co-attention except through the encoder; with the head alone on fixed states, only the spans count."""
    torch.manual_seed(0)
    head = DumaHead(16, 4, 0.0, 0.02).eval()
    hidden = torch.randn(2, 10, 16)
    passage = span_mask(torch.tensor([1, 1]), torch.tensor([5, 4]), 10)
    qa = span_mask(torch.tensor([6, 5]), torch.tensor([9, 8]), 10)
    base = head(hidden, passage, qa)
    changed = hidden.clone()
    changed[:, 0] += 5.0  # [CLS]
    changed[:, 9] += 5.0  # padding / [SEP]
    torch.testing.assert_close(head(changed, passage, qa), base)
    changed[:, 2] += 1.0  # a passage token
    assert not torch.allclose(head(changed, passage, qa), base)


def test_build_model_refuses_unknown_heads_and_mc_needs_a_pooler():
    with pytest.raises(ValueError, match="heads"):
        build_model("linear", tiny_encoder())
    with pytest.raises(ValueError, match="pooler"):
        build_model("mc", tiny_encoder(pooler=False))
    build_model("duma", tiny_encoder(pooler=False))  # DUMA does not read the pooler


def test_mc_saves_as_auto_model_for_multiple_choice_with_its_head(tmp_path, tokenizer_dir):
    from transformers import AutoModelForMultipleChoice

    model = build_model("mc", tiny_encoder(initializer_range=0.2)).eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)
    save_multiple_choice(model, tmp_path)
    for name in TOKENIZER_FILES:
        if (tokenizer_dir / name).is_file():
            shutil.copyfile(tokenizer_dir / name, tmp_path / name)
    hf_model, info = AutoModelForMultipleChoice.from_pretrained(str(tmp_path), output_loading_info=True,
                                                                local_files_only=True)
    assert type(hf_model).__name__ == "BertForMultipleChoice"
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    batch = collate_race(synthetic_race_table(3, seed=6))
    inputs = {key: batch[key] for key in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.inference_mode():
        torch.testing.assert_close(hf_model.eval()(**inputs).logits, model(**inputs))


def test_duma_saves_its_encoder_and_round_trips_through_load_finetuned(tmp_path, tokenizer_dir):
    from prep.folders import RunFolder
    from train.model import load_encoder, save_finetuned
    from safetensors.torch import load_file

    model = build_model("duma", tiny_encoder()).eval()
    save_finetuned(model, get_task("race").train, tmp_path, tokenizer_dir)
    rebuilt = build_model("duma", load_encoder(tmp_path / "model", pooler=True)).eval()
    rebuilt.head.load_state_dict(load_file(str(RunFolder(tmp_path).head)), strict=True)
    batch = collate_race(synthetic_race_table(3, seed=7))
    with torch.inference_mode():
        torch.testing.assert_close(rebuilt(**batch), model(**batch))
