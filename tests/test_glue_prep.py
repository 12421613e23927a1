"""GLUE prep: the layout is the tokenizer's own (BERT's [CLS] a [SEP] b [SEP] with token types; MPNet's
<s> a </s></s> b </s> without), features equal ``tokenizer(text, pair, truncation=True, max_length=...)``."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import REPO, shared_data

MPNET = REPO.parent / "shared" / "models" / "all-mpnet-base-v2-tokenizer"


def write_rte(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    lines = ["index\tsentence1\tsentence2\tlabel"] + [f"{i}\t{a}\t{b}\t{y}" for i, (a, b, y) in enumerate(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_an_mpnet_pair_is_laid_out_by_its_tokenizer_without_token_types(tmp_path):
    from transformers import AutoTokenizer

    from prep.features import open_features
    from tasks.glue.prep import GluePrepConfig, prepare_glue

    if not (MPNET / "tokenizer.json").is_file():
        pytest.fail(f"the MPNet tokenizer folder is missing: {MPNET}")
    data = write_rte(tmp_path / "dev.tsv", [("a", "b", "entailment"), ("a b c", "d", "not_entailment")])
    manifest = prepare_glue(data, tmp_path / "features", MPNET, GluePrepConfig(glue_task="rte"))
    table = open_features(tmp_path / "features")
    assert "token_type_ids" not in table.column_names and "token_type_ids" not in manifest["columns"]
    tokenizer = AutoTokenizer.from_pretrained(str(MPNET))
    first = tokenizer.convert_ids_to_tokens(table.column("input_ids")[0].as_py())
    assert first == ["<s>", "a", "</s>", "</s>", "b", "</s>"]
    assert table.column("label").to_pylist() == [0, 1]


@pytest.mark.fast
def test_bert_features_equal_the_tokenizer_call_on_real_rte_rows(tmp_path, hf_tokenizer, tokenizer_dir):
    from prep.features import open_features
    from tasks.glue.prep import GluePrepConfig, prepare_glue
    from tasks.glue.read import read_glue

    lines = shared_data("glue/RTE/dev.tsv").read_text(encoding="utf-8").splitlines(keepends=True)
    data = tmp_path / "dev.tsv"
    data.write_text("".join(lines[:41]), encoding="utf-8")
    config = GluePrepConfig(glue_task="rte", max_seq_length=64)
    manifest = prepare_glue(data, tmp_path / "features", tokenizer_dir, config)
    table = open_features(tmp_path / "features").sort_by("feature_id")
    examples, _, _ = read_glue(data, "rte")
    expected = hf_tokenizer([e.text for e in examples], [e.text_pair for e in examples], truncation=True,
                            max_length=64)
    assert table.column("input_ids").to_pylist() == expected["input_ids"]
    assert table.column("token_type_ids").to_pylist() == expected["token_type_ids"]
    assert table.column("example_id").to_pylist() == [str(i) for i in range(40)]
    assert max(len(ids) for ids in expected["input_ids"]) == 64
    assert manifest["counts"]["texts_truncated"] == sum(
        len(ids) > 64 for ids in hf_tokenizer([e.text for e in examples], [e.text_pair for e in examples])["input_ids"])
    assert manifest["input"]["labels"] == ["entailment", "not_entailment"] and manifest["counts"]["examples_in"] == 40
