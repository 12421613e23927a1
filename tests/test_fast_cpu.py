"""The CPU training speed-ups (train/fast_cpu.py) change speed only: the dropout keeps its probability
and expectation and its gradient is the mask's, attention computes what SDPA computes, a saved model
carries none of it, and the allocator setting is undone after training."""

from __future__ import annotations

import ctypes
import json
import math
import platform

import pytest
import torch
from torch import nn

from prep.folders import RunFolder
from tests.conftest import fine_tune, skip_or_fail
from train import fast_cpu
from train.config import TrainConfig
from train.dist import single_process
from train.model import load_encoder
from train.testing import make_tiny_model_dir, write_feature_dir

pytestmark = [pytest.mark.fast, pytest.mark.usefixtures("one_cpu_thread")]


def test_the_mask_drops_each_element_with_probability_p_and_scales_the_rest_by_its_inverse():
    torch.manual_seed(0)
    n = 1_000_000
    for p in (0.1, 0.5, 0.03):
        keep, scale = fast_cpu.keep_mask((1000, 1000), p)
        assert keep.dtype == torch.uint8 and set(keep.unique().tolist()) <= {0, 1}
        dropped = 1.0 - keep.double().mean().item()
        quantized = round(p * 65536) / 65536
        assert abs(quantized - p) < 1e-5
        assert abs(dropped - quantized) < 5 * math.sqrt(p * (1 - p) / n)  # 5 standard errors
        assert scale == pytest.approx(1 / (1 - quantized), rel=1e-12)


def test_the_mask_follows_torch_seed_and_has_no_pattern_across_slices():
    torch.manual_seed(3)
    first, _ = fast_cpu.keep_mask((4096,), 0.5)
    torch.manual_seed(3)
    again, _ = fast_cpu.keep_mask((4096,), 0.5)
    assert torch.equal(first, again)
    # The four 16-bit slices of one draw are independent: neighbours agree about half the time.
    agree = (first[:-1] == first[1:]).double().mean().item()
    assert abs(agree - 0.5) < 5 * math.sqrt(0.25 / 4095)


def test_fast_dropout_keeps_the_expectation_and_its_gradient_is_the_mask():
    torch.manual_seed(0)
    x = torch.full((512, 512), 2.0, requires_grad=True)
    out = fast_cpu.fast_dropout(x, 0.1)
    kept = out != 0
    scale = 1 / (1 - round(0.1 * 65536) / 65536)
    assert torch.allclose(out[kept], torch.full_like(out[kept], 2.0 * scale))
    assert out.mean().item() == pytest.approx(2.0, rel=0.01)
    out.sum().backward()
    assert torch.allclose(x.grad, kept.float() * scale)


def test_fast_dropout_is_the_identity_off_training_and_at_0_and_refuses_a_bad_p():
    x = torch.randn(8, 8)
    assert fast_cpu.fast_dropout(x, 0.1, training=False) is x
    assert fast_cpu.fast_dropout(x, 0.0) is x
    assert torch.equal(fast_cpu.fast_dropout(x, 1.0), torch.zeros_like(x))
    with pytest.raises(ValueError, match="dropout probability"):
        fast_cpu.fast_dropout(x, 1.5)
    module = fast_cpu.FastDropout(0.1).eval()
    assert module(x) is x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_attention_computes_what_sdpa_computes(tiny_encoder_dir, dtype):
    """Dropout 0 (the tiny encoder's), a padded batch: same hidden states and gradients as stock SDPA."""
    torch.manual_seed(0)
    stock, fast = load_encoder(tiny_encoder_dir), load_encoder(tiny_encoder_dir)
    swapped = fast_cpu.install(fast)
    assert swapped["attention"] == ["BertModel"] and swapped["dropout_modules"] > 0
    ids = torch.randint(1000, 2000, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[1, 12:] = 0
    mask[2, 5:] = 0
    weights = torch.randn(3, 20, stock.config.hidden_size)  # a loss whose gradient reaches the attention
    outputs, grads = [], []
    for model in (stock, fast):
        model.train()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        (hidden.float() * weights * mask[..., None]).sum().backward()
        outputs.append(hidden.float()[mask.bool()])
        grads.append(model.encoder.layer[0].attention.self.query.weight.grad)
    tolerance = 1e-5 if dtype == torch.float32 else 5e-2
    assert torch.allclose(outputs[0], outputs[1], atol=tolerance * 10, rtol=tolerance)
    assert ((grads[0] - grads[1]).norm() / grads[0].norm()).item() < tolerance * 10


def test_an_installed_model_evaluates_with_sdpa_and_saves_as_the_stock_one(tiny_encoder_dir, tmp_path):
    stock, fast = load_encoder(tiny_encoder_dir).eval(), load_encoder(tiny_encoder_dir)
    fast_cpu.install(fast)
    fast.eval()
    ids = torch.randint(1000, 2000, (2, 9))
    with torch.no_grad():
        assert torch.equal(stock(input_ids=ids).last_hidden_state, fast(input_ids=ids).last_hidden_state)
    fast.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "config.json").read_text())
    assert fast_cpu.ATTENTION not in json.dumps(config)
    assert not any(isinstance(module, fast_cpu.FastDropout) for module in load_encoder(tmp_path / "saved").modules())


def test_attention_leaves_a_call_it_does_not_handle_to_sdpa(monkeypatch):
    """An argument plain attention would ignore (here a position bias) sends the call to SDPA."""
    seen = []
    import transformers.integrations.sdpa_attention as sdpa

    monkeypatch.setattr(sdpa, "sdpa_attention_forward", lambda *args, **kwargs: seen.append(kwargs) or ("sdpa", None))
    module = nn.Module().train()
    q = torch.randn(1, 2, 4, 8, requires_grad=True)
    assert fast_cpu.attention(module, q, q, q, None, position_bias=torch.zeros(1, 2, 4, 4))[0] == "sdpa"
    assert fast_cpu.attention(module, q, q, q, None, position_ids=None)[0] != "sdpa"
    assert len(seen) == 1


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mmapped_blocks() -> int:
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2().hblks


def test_large_allocations_come_from_the_heap_while_training_and_from_mmap_after():
    if platform.libc_ver()[0] != "glibc":
        skip_or_fail("keep_freed_memory sets glibc's malloc; this C library is not glibc")
    before = _mmapped_blocks()
    with fast_cpu.keep_freed_memory() as applied:
        block = bytearray(48 * 2 ** 20)  # above glibc's largest mmap threshold (32 MiB)
        during = _mmapped_blocks()
        del block
    block = bytearray(48 * 2 ** 20)
    after = _mmapped_blocks()
    del block
    assert applied and during == before and after == before + 1


def test_a_cpu_run_trains_with_them_and_without(tmp_path, tokenizer_dir, caplog):
    """A tiny run with dropout: both settings train and save; only the fast one logs the swap."""
    from tasks.gap.model import synthetic_gap_table

    model_dir = make_tiny_model_dir(tmp_path / "model", tokenizer_dir, seed=0, dropout=0.1)
    features = write_feature_dir(tmp_path / "gap", synthetic_gap_table(16), "gap", "train", 64)
    losses = {}
    for fast in (True, False):
        out = tmp_path / f"run-{fast}"
        config = TrainConfig(task="gap", features_dir=str(features), run_dir=str(out), model_dir=str(model_dir),
                             global_batch_size=8, max_steps=2, progress_bar=False, precision="fp32", fast_cpu=fast)
        with caplog.at_level("INFO", logger="train.loop"):
            caplog.clear()
            metrics = fine_tune(config, single_process("cpu"))
        assert ("fast CPU training" in caplog.text) == fast
        assert json.loads(RunFolder(out).train_config.read_text())["fast_cpu"] is fast
        assert RunFolder(out).head.is_file()
        losses[fast] = metrics["train_loss_history"]
    assert losses[True] != losses[False]  # the same distribution, other draws
