"""train.model on a tiny in-process BERT: the three GAP heads, the SQuAD head, save and load."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, BertConfig, BertModel

from tasks import get_task
from tasks.gap.model import GapModel, collate_gap, mean_pool_spans, resize_token_types, synthetic_gap_table
from tasks.squad.model import SquadModel, collate_squad, synthetic_squad_table
from train.model import build_model, load_finetuned, save_finetuned
from train.testing import TINY_BERT

GAP_HEADS = ("concat", "multiply", "segment")


def compute_loss(output, batch):
    return get_task("squad" if isinstance(output, tuple) else "gap").train.loss(output, batch)


pytestmark = [pytest.mark.fast, pytest.mark.usefixtures("one_cpu_thread")]


def tiny_encoder(seed: int = 0, dropout: float = 0.0):
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout, **TINY_BERT)
    return BertModel(config, add_pooling_layer=False)


def tiny_gap_model(head: str) -> GapModel:
    encoder = tiny_encoder()
    if head == "segment":
        resize_token_types(encoder)
    return GapModel(encoder, head)


def test_mean_pool_spans_averages_exclusive_ranges():
    hidden = torch.arange(2 * 5 * 1, dtype=torch.float32).view(2, 5, 1)
    pooled = mean_pool_spans(hidden, torch.tensor([1, 0]), torch.tensor([3, 1]))
    assert pooled.squeeze(-1).tolist() == [1.5, 5.0]


@pytest.mark.parametrize("head", GAP_HEADS)
def test_gap_head_trains_and_every_parameter_gets_a_gradient(head):
    model = tiny_gap_model(head)
    batch = collate_gap(synthetic_gap_table(16, seed=1), pad_to_multiple_of=8)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(12):
        logits = model(**batch)
        assert logits.shape == (16, 3) and logits.dtype == torch.float32
        loss = compute_loss(logits, batch)
        loss.backward()
        if not losses:  # DDP without find_unused_parameters needs a gradient on every parameter
            assert [n for n, p in model.named_parameters() if p.grad is None] == []
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.2


def test_segment_head_type_embedding_init():
    encoder = tiny_encoder()
    pretrained = encoder.embeddings.token_type_embeddings.weight.detach().clone()
    resize_token_types(encoder, generator=torch.Generator().manual_seed(0))
    grown = encoder.embeddings.token_type_embeddings.weight.detach()
    assert grown.shape == (4, pretrained.shape[1]) and encoder.config.type_vocab_size == 4
    torch.testing.assert_close(grown[0], pretrained[0])
    noise = grown[1:] - pretrained[0]
    assert 0 < noise.std() < 3 * encoder.config.initializer_range
    assert not torch.equal(grown[1], grown[2])
    with pytest.raises(ValueError, match="segment_ids"):
        GapModel(encoder, "segment")(**{k: v for k, v in collate_gap(synthetic_gap_table(2)).items() if k != "segment_ids"})


def test_squad_head_masks_padding_and_ignores_pad_length():
    model = SquadModel(tiny_encoder()).eval()
    rows = synthetic_squad_table(4, seed=2)
    tight, wide = collate_squad(rows), collate_squad(rows, pad_to_multiple_of=128)
    with torch.no_grad():
        start_tight, end_tight = model(**tight)
        start_wide, _ = model(**wide)
    width = tight["input_ids"].shape[1]
    torch.testing.assert_close(start_wide[:, :width], start_tight, rtol=1e-4, atol=1e-4)
    assert (start_wide[:, width:] == torch.finfo(torch.float32).min).all()
    torch.testing.assert_close(compute_loss(model(**wide), wide), compute_loss((start_tight, end_tight), tight),
                               rtol=1e-4, atol=1e-4)
    assert not hasattr(model.encoder, "pooler") or model.encoder.pooler is None


def test_forward_rejects_unknown_arguments():
    model = tiny_gap_model("multiply")
    batch = collate_gap(synthetic_gap_table(2))
    with pytest.raises(TypeError, match="unexpected"):
        model(**batch, p_startt=batch["p_start"])


@pytest.mark.parametrize("task,head", [("gap", "segment"), ("gap", "multiply"), ("squad", "span")])
def test_save_and_load_finetuned_round_trip(tmp_path, task, head, tiny_encoder_dir):
    source = tiny_encoder_dir
    torch.manual_seed(1)
    model = build_model(get_task(task).train, head, source)
    out = tmp_path / "out"
    save_finetuned(model, get_task(task).train, out, source)
    (out / "train_config.json").write_text(json.dumps({"task": task, "head": head}))
    loaded, config = load_finetuned(out, get_task(task).train)
    assert config["head"] == head and not loaded.training
    batch = (collate_gap(synthetic_gap_table(4)) if task == "gap" else collate_squad(synthetic_squad_table(4)))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), model(**batch))
    assert AutoTokenizer.from_pretrained(str(out / "model")).cls_token_id == 101
    saved_config = json.loads((out / "model" / "config.json").read_text())
    assert saved_config["type_vocab_size"] == (4 if head == "segment" else 2)
    assert (out / "model" / "model.safetensors").is_file() and (out / "head.safetensors").is_file()


def test_segment_ids_change_the_segment_heads_logits():
    """The segmentation head reads P/A/B only through segment_ids: other ids, other logits."""
    batch = collate_gap(synthetic_gap_table(8, seed=2))
    swapped = batch["segment_ids"].clone()
    swapped[batch["segment_ids"] == 2], swapped[batch["segment_ids"] == 3] = 3, 2  # A and B trade places
    blank = torch.zeros_like(batch["segment_ids"])
    with torch.no_grad():
        segment = tiny_gap_model("segment").eval()
        logits = segment(**batch)
        torch.testing.assert_close(segment(**batch), logits, rtol=0, atol=0)  # same ids, same logits
        # Freshly grown type rows are row 0 plus small noise: the change is small, but in every row.
        for other in (swapped, blank):
            assert (segment(**{**batch, "segment_ids": other}) != logits).any(dim=1).all()
        for head in ("concat", "multiply"):  # the mention heads ignore segment_ids
            model = tiny_gap_model(head).eval()
            torch.testing.assert_close(model(**{**batch, "segment_ids": swapped}), model(**batch))


def test_dropout_replaces_the_encoders_and_reaches_the_head(tiny_encoder_dir_dropout):
    source = tiny_encoder_dir_dropout
    batch = collate_gap(synthetic_gap_table(4))
    torch.manual_seed(0)
    model = build_model(get_task("gap").train, "multiply", source, dropout=0.3)
    assert model.encoder.config.hidden_dropout_prob == model.encoder.config.attention_probs_dropout_prob == 0.3
    assert model.head.dropout.p == 0.3
    torch.manual_seed(0)
    quiet = build_model(get_task("gap").train, "multiply", source, dropout=0.0).train()
    with torch.no_grad():  # in train mode, dropout 0 gives the same output twice; the folder's 0.1 would not
        torch.testing.assert_close(quiet(**batch), quiet(**batch))
    torch.manual_seed(0)
    own = build_model(get_task("gap").train, "multiply", source).train()
    assert own.encoder.config.hidden_dropout_prob == 0.1
    with torch.no_grad():
        assert not torch.equal(own(**batch), own(**batch))


def test_dropout_is_refused_for_an_encoder_without_those_settings(tmp_path):
    from transformers import DistilBertConfig

    from train.model import load_encoder

    DistilBertConfig(n_layers=1, dim=32, hidden_dim=37, n_heads=2).save_pretrained(tmp_path / "distil")
    with pytest.raises(ValueError, match="distilbert config has no hidden_dropout_prob"):
        load_encoder(tmp_path / "distil", dropout=0.2)
