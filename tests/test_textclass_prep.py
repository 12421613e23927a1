"""Text classification prep: folding cuts where the tokenizer does, labels and skips are accounted
for, modes agree (reading CSV / TSV / JSONL / Parquet: tests/test_textclass_read.py; splits:
tests/test_textclass_split.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pytest

from prep.features import open_features, sorted_by_feature_id
from prep.tokenizer import export_tokenizer, load_backend
from prep.__main__ import main as prep_main
from tests.conftest import shared_data
from tasks.textclass.prep import (FEATURES_SCHEMA, REGRESSION_SCHEMA, TextClassChunk, TextClassPrepConfig,
                                convert_chunk, fold_spans, prepare_textclass)
from tasks.textclass.read import TextExample

MAX_SEQ_LENGTH = 16  # room 14: the fixture's texts need 1, 2 and 3 windows
ROOM = MAX_SEQ_LENGTH - 2
BBC = "textclass/bbc-news/train.csv"
BBC_COLUMNS = dict(text_column="Text", label_column="Category", id_column="ArticleId")


@pytest.fixture(scope="module")
def words(hf_tokenizer) -> list[str]:
    """Plain words the tokenizer keeps as one token each, so a text of n words has n known tokens."""
    found = []
    for token_id in range(2000, 4000):
        token = hf_tokenizer.convert_ids_to_tokens(token_id)
        if token.isalpha() and hf_tokenizer(token, add_special_tokens=False)["input_ids"] == [token_id]:
            found.append(token)
    assert len(found) > 200
    return found


def _text(words: list[str], n: int, offset: int = 0) -> str:
    return " ".join(words[offset:offset + n])


@pytest.fixture(scope="module")
def state(tokenizer_dir, tmp_path_factory):
    """The worker state convert_chunk gets, built in this process (no pool)."""
    return load_backend(export_tokenizer(tokenizer_dir, tmp_path_factory.mktemp("tok") / "tokenizer.json"))


def _convert(state, config, examples, labels=("neg", "pos")) -> tuple[list[dict], dict]:
    columns, stats = convert_chunk(state, TextClassChunk(config, tuple(labels), list(enumerate(examples))))
    rows = [dict(zip(columns, values)) for values in zip(*columns.values())] if columns else []
    return rows, stats


def _example(text, label="pos", pair=None, line=2) -> TextExample:
    return TextExample(f"row-{line}", text, pair, label, line)


# --- folding ------------------------------------------------------------------------------------
@pytest.mark.fast
def test_fold_spans_cut_consecutive_windows():
    assert fold_spans(5, room=14) == [(0, 5)]
    assert fold_spans(14, room=14) == [(0, 14)]
    assert fold_spans(15, room=14) == [(0, 14), (14, 15)]
    assert fold_spans(30, room=14) == [(0, 14), (14, 28), (28, 30)]
    assert fold_spans(30, room=14, fold_stride=4) == [(0, 14), (10, 24), (20, 30)]
    assert fold_spans(0, room=14) == []
    with pytest.raises(ValueError):
        fold_spans(30, room=14, fold_stride=14)


@pytest.mark.fast
@pytest.mark.parametrize("fold_stride", [0, 4])
@pytest.mark.parametrize("num_tokens", [5, 14, 15, 30, 43])
def test_windows_equal_the_tokenizers_own_overflow(state, hf_tokenizer, words, num_tokens, fold_stride):
    text = _text(words, num_tokens)
    config = TextClassPrepConfig(max_seq_length=MAX_SEQ_LENGTH, fold_stride=fold_stride)
    rows, stats = _convert(state, config, [_example(text, "neg")])
    hf = hf_tokenizer(text, truncation=True, max_length=MAX_SEQ_LENGTH, stride=fold_stride,
                      return_overflowing_tokens=True)
    assert [r["input_ids"] for r in rows] == hf["input_ids"]
    assert [r["token_type_ids"] for r in rows] == hf["token_type_ids"]
    ids = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == num_tokens
    spans = fold_spans(num_tokens, ROOM, fold_stride)
    assert [r["input_ids"][1:-1] for r in rows] == [ids[a:b] for a, b in spans]
    assert [r["window_index"] for r in rows] == list(range(len(spans)))
    assert {r["num_windows"] for r in rows} == {len(spans)}
    assert {r["label"] for r in rows} == {0}  # every window inherits the text's class id
    assert stats == {"examples_converted": 1, "windows": len(spans), "texts_folded": int(len(spans) > 1),
                     "texts_truncated": 0, "pairs_truncated": 0, "skipped": []}


@pytest.mark.fast
def test_no_fold_truncates_to_one_window(state, hf_tokenizer, words):
    config = TextClassPrepConfig(max_seq_length=MAX_SEQ_LENGTH, fold=False)
    examples = [_example(_text(words, 30), "pos", line=2), _example(_text(words, 5), "neg", line=3)]
    rows, stats = _convert(state, config, examples)
    truncated = hf_tokenizer(examples[0].text, truncation=True, max_length=MAX_SEQ_LENGTH)["input_ids"]
    assert [r["input_ids"] for r in rows] == [truncated, hf_tokenizer(examples[1].text)["input_ids"]]
    assert [(r["window_index"], r["num_windows"], r["label"]) for r in rows] == [(0, 1, 1), (0, 1, 0)]
    assert stats["texts_truncated"] == 1 and stats["texts_folded"] == 0 and stats["windows"] == 2


@pytest.mark.fast
def test_text_pair_is_kept_whole_in_every_window(state, hf_tokenizer, words):
    config = TextClassPrepConfig(max_seq_length=MAX_SEQ_LENGTH, fold_stride=2, text_pair_column="pair")
    text, pair = _text(words, 25), _text(words, 3, offset=100)
    rows, stats = _convert(state, config, [_example(text, "pos", pair=pair)])
    # With a pair that fits, the cut is Hugging Face's only_first truncation with overflow.
    hf = hf_tokenizer(text, pair, truncation="only_first", max_length=MAX_SEQ_LENGTH, stride=2,
                      return_overflowing_tokens=True)
    assert [r["input_ids"] for r in rows] == hf["input_ids"]
    assert [r["token_type_ids"] for r in rows] == hf["token_type_ids"]
    pair_ids = hf_tokenizer(pair, add_special_tokens=False)["input_ids"]
    for row in rows:
        assert row["input_ids"][-len(pair_ids) - 1:-1] == pair_ids
        assert row["token_type_ids"][-len(pair_ids) - 1:] == [1] * (len(pair_ids) + 1)
    assert len(rows) == len(fold_spans(25, MAX_SEQ_LENGTH - 3 - 3, 2)) and stats["pairs_truncated"] == 0


@pytest.mark.fast
def test_a_long_pair_is_cut_to_half_the_room(state, hf_tokenizer, words):
    config = TextClassPrepConfig(max_seq_length=MAX_SEQ_LENGTH, text_pair_column="pair")
    pair = _text(words, 20, offset=100)
    rows, stats = _convert(state, config, [_example(_text(words, 9), "pos", pair=pair)])
    cap = (MAX_SEQ_LENGTH - 3) // 2  # 6 pair tokens, 7 text tokens per window
    pair_ids = hf_tokenizer(pair, add_special_tokens=False)["input_ids"][:cap]
    assert [len(r["input_ids"]) for r in rows] == [MAX_SEQ_LENGTH, 3 + 2 + cap]
    assert all(r["input_ids"][-cap - 1:-1] == pair_ids for r in rows)
    assert stats["pairs_truncated"] == 1 and stats["texts_folded"] == 1


@pytest.mark.fast
def test_a_text_without_tokens_is_skipped(state):
    rows, stats = _convert(state, TextClassPrepConfig(max_seq_length=MAX_SEQ_LENGTH), [_example("\u200b", line=7)])
    assert rows == [] and stats["examples_converted"] == 0
    assert stats["skipped"] == [{"example_id": "row-7", "reason": "text has no tokens", "where": "line 7"}]


@pytest.mark.fast
def test_regression_labels_are_floats(state, words):
    config = TextClassPrepConfig(max_seq_length=MAX_SEQ_LENGTH, label_type="float")
    assert config.schema == REGRESSION_SCHEMA and config.schema.field("label").type == pa.float32()
    assert TextClassPrepConfig().schema == FEATURES_SCHEMA
    rows, _ = _convert(state, config, [_example(_text(words, 20), 0.25)], labels=())
    assert [r["label"] for r in rows] == [0.25, 0.25]


@pytest.mark.fast
def test_config_is_validated():
    with pytest.raises(ValueError, match="fold_stride"):
        TextClassPrepConfig(max_seq_length=16, fold_stride=14)
    with pytest.raises(ValueError, match="fold_stride"):  # a pair leaves 7 text tokens at 16
        TextClassPrepConfig(max_seq_length=16, fold_stride=7, text_pair_column="pair")
    with pytest.raises(ValueError, match="regression"):
        TextClassPrepConfig(label_type="float", labels='["a"]')
    with pytest.raises(ValueError, match="JSON list"):
        TextClassPrepConfig(labels="neg,pos")
    with pytest.raises(ValueError, match="repeat"):
        TextClassPrepConfig(labels='["a", "a"]')
    with pytest.raises(ValueError, match="format"):
        TextClassPrepConfig(format="xlsx")
    assert TextClassPrepConfig(labels="[2, 0, 1]").label_list() == ["2", "0", "1"]


# --- input files ------------------------------------------------------------------------------------
def _write_csv(path: Path, rows: list[list[str]], delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle, delimiter=delimiter, lineterminator="\n").writerows(rows)
    return path


@pytest.fixture
def fixture_csv(tmp_path, words) -> Path:
    """Kept rows, a multi-line quoted text, a blank line and rows that must be skipped."""
    rows = [
        ["id", "body", "topic"],
        ["a", _text(words, 5), "pos"],                 # line 2
        ["b", _text(words, 30, 10), "neg"],            # line 3
        ["c", "first line\nsecond line", "pos"],       # lines 4-5
        ["d", "   ", "pos"],                           # line 6: empty text
        ["e", _text(words, 15, 50), ""],               # line 7: missing label
        [],                                            # line 8: blank
        ["f", _text(words, 15, 50), "neutral"],        # line 9
        ["", "no id here", "pos"],                     # line 10: empty id
        ["a", "same id again", "neg"],                 # line 11: duplicate id
    ]
    return _write_csv(tmp_path / "fixture.csv", rows)


# --- the pool, end to end -------------------------------------------------------------------------
def test_prepare_counts_windows_and_records_the_input(fixture_csv, tmp_path, words):
    config = TextClassPrepConfig(max_seq_length=MAX_SEQ_LENGTH, text_column="body", label_column="topic",
                                 id_column="id", labels='["neg", "pos"]')
    manifest = prepare_textclass(fixture_csv, tmp_path / "out", config=config, nproc=1, mode="merge",
                                 rows_per_chunk=2)
    table = sorted_by_feature_id(open_features(tmp_path / "out"))
    assert table.schema == FEATURES_SCHEMA and manifest["columns"] == FEATURES_SCHEMA.names
    # a: 5 tokens -> 1 window; b: 30 -> 3; c: 4 -> 1; f (neutral) is skipped, not in the list.
    assert table.column("example_id").to_pylist() == ["a", "b", "b", "b", "c"]
    assert table.column("example_index").to_pylist() == [0, 1, 1, 1, 2]
    assert table.column("label").to_pylist() == [1, 0, 0, 0, 1]
    assert table.column("window_index").to_pylist() == [0, 0, 1, 2, 0]
    assert table.column("num_windows").to_pylist() == [1, 3, 3, 3, 1]
    assert table.column("feature_id").to_pylist() == list(range(5))
    info = manifest["input"]
    assert {k: info[k] for k in ("labels", "label_type", "text_column", "label_column", "text_pair_column",
                                 "id_column", "format", "rows", "texts", "windows")} == {
        "labels": ["neg", "pos"], "label_type": "str", "text_column": "body", "label_column": "topic",
        "text_pair_column": None, "id_column": "id", "format": "csv", "rows": 8, "texts": 3, "windows": 5}
    counts = manifest["counts"]
    assert counts["examples_in"] == 8 and counts["examples_converted"] == 3 and counts["examples_skipped"] == 5
    assert counts["features_out"] == counts["windows"] == 5 and counts["texts_folded"] == 1
    assert manifest["skip_reasons"] == {"empty text": 1, "missing label": 1, "empty id": 1, "duplicate id": 1,
                                        "label not in the training label set": 1}
    assert {s["where"] for s in manifest["skipped"]} == {"line 6", "line 7", "line 9", "line 10", "line 11"}
    assert manifest["dataset"] == "textclass" and manifest["split"] == "fixture"


def test_cli_no_fold_and_bad_input(fixture_csv, tmp_path, capsys):
    out = tmp_path / "cli"
    code = prep_main(["textclass", str(fixture_csv), str(out), "--max-seq-length", str(MAX_SEQ_LENGTH), "--no-fold",
                 "--text-column", "body", "--label-column", "topic", "--nproc", "1", "--mode", "merge", "--quiet"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["fold"] is False and manifest["input"]["labels"] == ["neg", "neutral", "pos"]
    # no id column: the empty-id and repeated-id rows are texts too
    assert manifest["counts"]["features_out"] == manifest["counts"]["examples_converted"] == 6
    assert manifest["counts"]["texts_truncated"] == 2  # b (30 tokens) and f (15 tokens)
    capsys.readouterr()
    assert prep_main(["textclass", str(fixture_csv), str(tmp_path / "bad"), "--nproc", "1", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "fixture.csv: line 1: no column 'text'" in err and "Traceback" not in err
    assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def bbc_full(tmp_path_factory):
    out = tmp_path_factory.mktemp("bbc") / "full"
    config = TextClassPrepConfig(max_seq_length=128, **BBC_COLUMNS)
    return prepare_textclass(shared_data(BBC), out, config=config, nproc=1, mode="merge"), out


def test_bbc_preps_every_text_into_folded_windows(bbc_full):
    manifest, out = bbc_full
    counts = manifest["counts"]
    assert counts["examples_in"] == counts["examples_converted"] == 1490 and counts["examples_skipped"] == 0
    # 1,484 texts have more than 126 whitespace words (the data README), so at least that many fold.
    assert counts["texts_folded"] >= 1484 and counts["features_out"] == manifest["input"]["windows"]
    table = open_features(out)
    lengths = pa.compute.list_value_length(table.column("input_ids"))
    assert pa.compute.max(lengths).as_py() == 128
    per_text = table.group_by("example_id").aggregate([("window_index", "count"), ("num_windows", "max")])
    assert per_text.num_rows == 1490
    assert per_text.column("window_index_count").to_pylist() == per_text.column("num_windows_max").to_pylist()


@pytest.mark.parametrize("nproc,mode", [(2, "shards"), (2, "merge"), (1, "shards")])
def test_bbc_first_rows_are_the_same_whatever_nproc_and_mode(bbc_full, tmp_path, nproc, mode):
    """The first 200 rows give the full run's first windows, ids included, on any pool layout."""
    full_manifest, full_dir = bbc_full
    source = shared_data(BBC).read_text(encoding="utf-8")
    rows = list(csv.reader(source.splitlines(keepends=True)))[:201]
    head = _write_csv(tmp_path / "head.csv", rows)
    config = TextClassPrepConfig(max_seq_length=128, **BBC_COLUMNS)
    manifest = prepare_textclass(head, tmp_path / "out", config=config, nproc=nproc, mode=mode,
                                 rows_per_chunk=16, reserve_cpus=0)
    table = sorted_by_feature_id(open_features(tmp_path / "out"))
    full = sorted_by_feature_id(open_features(full_dir)).slice(0, table.num_rows)
    assert manifest["nproc"] == nproc and manifest["counts"]["examples_converted"] == 200
    assert table.equals(full)
    assert set(full.column("example_index").to_pylist()) == set(range(200))


# --- splitting ----------------------------------------------------------------------------------
