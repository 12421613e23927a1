"""Any encoder with a fast tokenizer: the layout read off the tokenizer, AutoModel encoders, token types.

Tiny random-weight encoders are built from ../shared/models/all-mpnet-base-v2-tokenizer's config
(shrunk to 2 layers, hidden 64): MPNet itself (no token types) and RoBERTa on the same tokenizer
(``<s> A </s></s> B </s>``, a one-row token-type embedding). Never the 420 MB download.
End to end (prep -> a few training steps -> evaluation) is in test_encoders_e2e.py.
"""

from __future__ import annotations

from tasks import get_task
import csv

import pytest
import torch

from prep.features import open_features, sorted_by_feature_id
from prep.tokenizer import SpecialTokens, export_tokenizer, load_fast_tokenizer, read_layout
from tasks.gap.model import collate_gap, synthetic_gap_table
from tasks.gap.prep import GapPrepConfig, prepare_gap
from train.model import build_model, load_encoder, takes_token_types
from train.testing import make_tiny_encoder_dir
from tests.conftest import shared_data
from tests.test_prep_gap import _check_spans

pytestmark = pytest.mark.usefixtures("one_cpu_thread")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, mpnet_tokenizer_dir):
    root = tmp_path_factory.mktemp("encoders")
    return {
        "mpnet": make_tiny_encoder_dir(root / "mpnet", mpnet_tokenizer_dir),
        "roberta": make_tiny_encoder_dir(root / "roberta", mpnet_tokenizer_dir, model_type="roberta"),
    }


def test_layout_is_read_off_the_tokenizer(tmp_path, tokenizer_dir, mpnet_tokenizer_dir):
    bert = export_tokenizer(tokenizer_dir, tmp_path / "bert.json").special
    assert bert == SpecialTokens(cls_id=101, sep_id=102, pad_id=0)  # the BERT defaults
    assert (bert.pair_specials, bert.first_type, bert.second_type, bert.token_types) == (3, 0, 1, True)
    mpnet = export_tokenizer(mpnet_tokenizer_dir, tmp_path / "mpnet.json").special
    hf = load_fast_tokenizer(mpnet_tokenizer_dir)
    s, e = hf.cls_token_id, hf.sep_token_id  # <s> = 0, </s> = 2
    assert (mpnet.single_prefix, mpnet.single_suffix) == ((s,), (e,))
    assert (mpnet.pair_prefix, mpnet.pair_middle, mpnet.pair_suffix) == ((s,), (e, e), (e,))
    assert (mpnet.pad_id, mpnet.pair_specials, mpnet.token_types, mpnet.second_type) == (1, 4, False, 0)
    # what the assembled layout gives is the tokenizer's own pair encoding
    q, c = hf("who?", add_special_tokens=False)["input_ids"], hf("the cat sat", add_special_tokens=False)["input_ids"]
    assert [*mpnet.pair_prefix, *q, *mpnet.pair_middle, *c, *mpnet.pair_suffix] == hf("who?", "the cat sat")["input_ids"]


def test_an_unsupported_layout_is_a_clear_error(mpnet_tokenizer_dir):
    """XLNet-style: the cls token at the end, where features cannot put SQuAD's no-answer label."""
    from tokenizers import Tokenizer
    from tokenizers.processors import TemplateProcessing

    backend = Tokenizer.from_file(str(mpnet_tokenizer_dir / "tokenizer.json"))
    backend.post_processor = TemplateProcessing(single="$A </s> <s>", pair="$A </s> $B:1 </s>:1 <s>:1",
                                                special_tokens=[("<s>", 0), ("</s>", 2)])
    with pytest.raises(ValueError, match="unsupported special-token layout.*cls first"):
        read_layout(backend, cls_id=0, sep_id=2, pad_id=1, token_types=True, model_dir="xlnet-like")
    backend.post_processor = TemplateProcessing(single="<s> $A </s>", pair="<s> $A </s> $B:1 </s>",
                                                special_tokens=[("<s>", 0), ("</s>", 2)])
    with pytest.raises(ValueError, match="types"):  # the second segment's types are not constant
        read_layout(backend, cls_id=0, sep_id=2, pad_id=1, token_types=True)


def test_any_automodel_encoder_loads_without_pooler(encoders, tokenizer_dir):
    mpnet, roberta, bert = (load_encoder(encoders["mpnet"]), load_encoder(encoders["roberta"]),
                            load_encoder(tokenizer_dir))
    assert [type(m).__name__ for m in (mpnet, roberta, bert)] == ["MPNetModel", "RobertaModel", "BertModel"]
    assert all(getattr(m, "pooler", None) is None for m in (mpnet, roberta, bert))
    assert [takes_token_types(m) for m in (mpnet, roberta, bert)] == [False, True, True]


def test_segment_head_refused_without_token_types(encoders):
    with pytest.raises(ValueError, match="segment head marks P/A/B with token types.*mpnet.*multiply"):
        build_model(get_task("gap").train, "segment", encoders["mpnet"])


def test_train_cli_refuses_the_segment_head_in_one_line(encoders, tmp_path, capsys):
    from train.__main__ import main as train_main
    from train.testing import write_feature_dir

    features = write_feature_dir(tmp_path / "gap", synthetic_gap_table(32), "gap", "train", 64)
    code = train_main(["--task", "gap", "--features", str(features), "--out", str(tmp_path / "out"), "--model",
                       str(encoders["mpnet"]), "--head", "segment", "--max-steps", "1", "--no-progress-bar"])
    err = capsys.readouterr().err
    assert code == 2 and "error: the segment head marks P/A/B with token types" in err and "Traceback" not in err


def test_gap_heads_run_on_each_family(encoders):
    batch = collate_gap(synthetic_gap_table(4, min_len=12, max_len=20), pad_id=1)
    for family, heads in (("mpnet", ("multiply", "concat")), ("roberta", ("multiply", "concat", "segment"))):
        for head in heads:
            torch.manual_seed(0)
            model = build_model(get_task("gap").train, head, encoders[family]).eval()
            with torch.no_grad():
                logits = model(**batch)
            assert logits.shape == (4, 3) and torch.isfinite(logits).all(), (family, head)
    # RoBERTa's one token type grows to P/A/B's four, row 0 kept: the segment head has types to mark
    assert model.encoder.embeddings.token_type_embeddings.num_embeddings == 4
    # the segment ids reach the encoder: other ids change the logits
    with torch.no_grad():
        moved = model(**{**batch, "segment_ids": torch.zeros_like(batch["segment_ids"])})
    assert not torch.allclose(moved, logits)


@pytest.mark.parametrize("folder", ["mpnet_tokenizer_dir", "roberta_tokenizer_dir"])
def test_gap_features_with_roberta_style_tokenizers(tmp_path, request, folder):
    """Real gap-validation, MPNet's WordPiece and RoBERTa's byte-level BPE: every P/A/B span decodes
    to its mention, <s> ... </s> around each text, nothing skipped."""
    folder = request.getfixturevalue(folder)
    source = shared_data("gap/gap-validation.tsv")
    with open(source, encoding="utf-8", newline="") as handle:
        rows = {r["ID"]: r for r in csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)}
    manifest = prepare_gap(source, tmp_path / "gap", folder, nproc=1, mode="merge", rows_per_chunk=128)
    assert manifest["counts"]["examples_converted"] == len(rows) == 454
    table = sorted_by_feature_id(open_features(tmp_path / "gap"))
    hf = load_fast_tokenizer(folder)
    assert (hf.cls_token, hf.sep_token) == ("<s>", "</s>")
    _check_spans(table, rows, hf, GapPrepConfig().max_seq_length)


def test_squad_room_counts_the_tokenizers_special_tokens(tmp_path, mpnet_tokenizer_dir):
    """196 - 64 - 3 leaves BERT 129 > 128 context tokens; MPNet's 4 specials leave 128: no window advance."""
    from tasks.squad.prep import SquadPrepConfig, prepare_squad

    config = SquadPrepConfig(max_seq_length=196, doc_stride=128, max_query_length=64, max_articles=1)
    with pytest.raises(ValueError, match="4 special tokens of this tokenizer must exceed doc_stride"):
        prepare_squad(shared_data("squad/dev-v1.1.json"), tmp_path / "out", mpnet_tokenizer_dir, config, nproc=1)
    assert not (tmp_path / "out").exists()


def test_a_missing_model_folder_fails_under_ci(monkeypatch, tmp_path):
    import tests.conftest as conftest

    monkeypatch.setattr(conftest, "MODELS_DIR", tmp_path)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="model folder not found: .*all-mpnet-base-v2-tokenizer"):
        conftest.shared_model("all-mpnet-base-v2-tokenizer")
