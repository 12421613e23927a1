"""Text classification input: CSV / TSV / JSONL / Parquet rows read with their line numbers, skips
counted, labels ordered, fields of any size, bad files failing with file, line and column."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from prep.features import open_features, sorted_by_feature_id
from tasks.textclass.prep import TextClassPrepConfig, prepare_textclass, read_textclass
from tasks.textclass.read import TextClassFormatError, read_examples
from tasks.textclass.split import duplicate_key
from tests.conftest import shared_data
from tests.test_textclass_prep import (BBC, BBC_COLUMNS, MAX_SEQ_LENGTH, _text, _write_csv,  # noqa: F401
                                       fixture_csv, words)


@pytest.mark.fast
def test_rows_are_read_and_skips_keep_their_lines(fixture_csv):
    examples, skipped, info = read_examples(fixture_csv, text_column="body", label_column="topic", id_column="id")
    assert [(ex.example_id, ex.label, ex.line) for ex in examples] == [
        ("a", "pos", 2), ("b", "neg", 3), ("c", "pos", 4), ("f", "neutral", 9)]
    assert examples[2].text == "first line\nsecond line"
    assert skipped == [
        {"example_id": "d", "reason": "empty text", "where": "line 6"},
        {"example_id": "e", "reason": "missing label", "where": "line 7"},
        {"example_id": None, "reason": "empty id", "where": "line 10"},
        {"example_id": "a", "reason": "duplicate id", "where": "line 11"},
    ]
    assert info == {"format": "csv", "text_column": "body", "label_column": "topic", "text_pair_column": None,
                    "id_column": "id", "label_type": "str", "labels": ["neg", "neutral", "pos"], "rows": 8,
                    "texts": 4}
    no_ids, _, _ = read_examples(fixture_csv, text_column="body", label_column="topic")
    assert [ex.example_id for ex in no_ids][:3] == ["row-2", "row-3", "row-4"]


@pytest.mark.fast
def test_integer_labels_sort_numerically_and_jsonl_tsv_read_alike(tmp_path):
    rows = [{"text": f"text {i}", "label": label} for i, label in enumerate([10, "2", 9, "02", " 1"])]
    jsonl = tmp_path / "data.jsonl"
    jsonl.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    examples, _, info = read_examples(jsonl)
    assert info["label_type"] == "int" and info["labels"] == ["1", "2", "9", "10"]
    assert [ex.label for ex in examples] == ["10", "2", "9", "2", "1"]
    tsv = _write_csv(tmp_path / "data.tsv", [["text", "label"]] + [[r["text"], str(r["label"])] for r in rows],
                     delimiter="\t")
    from_tsv = read_examples(tsv)[0]
    assert [(ex.text, ex.label, ex.line) for ex in from_tsv] == [(ex.text, ex.label, ex.line + 1) for ex in examples]
    floats, _, info = read_examples(jsonl, label_type="float")
    assert info["labels"] == [] and [ex.label for ex in floats] == [10.0, 2.0, 9.0, 2.0, 1.0]


@pytest.mark.fast
def test_the_bbc_file_reads_as_1490_texts_and_5_labels():
    examples, skipped, info = read_examples(shared_data(BBC), **BBC_COLUMNS)
    assert len(examples) == 1490 and skipped == []
    assert info["labels"] == ["business", "entertainment", "politics", "sport", "tech"]
    assert len({duplicate_key(ex) for ex in examples}) == 1440


BAD_INPUTS = [
    # (file name, bytes, read_examples kwargs, what the message must say)
    ("missing.csv", b"id,body\n1,hello\n", {},
     ["missing.csv: line 1: no column 'text'", "'id', 'body'"]),
    ("latin1.csv", "text,label\nok,a\ncaf\u00e9 ol\u00e9,b\n".encode("latin-1"), {},
     ["latin1.csv: line 3: byte column 4: byte 0xe9 is not UTF-8"]),
    ("empty.csv", b"", {}, ["empty.csv: no data rows"]),
    ("header.csv", b"text,label\n\n", {}, ["header.csv: no data rows"]),
    ("broken.jsonl", b'{"text": "a", "label": "x"}\n{"text": "b", "label": }\n', {},
     ["broken.jsonl: line 2: column 24: not valid JSON"]),
    ("array.jsonl", b'[{"text": "a", "label": "x"}]\n', {}, ["array.jsonl: line 1", "one object per line"]),
    ("nested.jsonl", b'{"text": "a", "label": "x"}\n{"text": ["b"], "label": "y"}\n', {},
     ["nested.jsonl: line 2: column 'text'"]),
    ("regression.csv", b"text,score\na,0.5\nb,high\n", {"label_column": "score", "label_type": "float"},
     ["regression.csv: line 3: column 'score': label 'high' is not a finite number"]),
    ("ints.csv", b"text,label\na,1\nb,one\n", {"label_type": "int"},
     ["ints.csv: line 3: column 'label': label 'one' is not an integer"]),
    ("fields.csv", b"text,label\na,1\nb,2,extra\n", {}, ["fields.csv: line 3: 3 fields, the header has 2"]),
    ("data.xlsx", b"text,label\na,1\n", {}, ["data.xlsx: cannot tell the format", "'.xlsx'"]),
]


@pytest.mark.fast
@pytest.mark.parametrize("name,data,kwargs,expected", BAD_INPUTS, ids=[case[0] for case in BAD_INPUTS])
def test_bad_input_names_file_line_and_column(tmp_path, name, data, kwargs, expected):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(TextClassFormatError) as caught:
        read_examples(path, **kwargs)
    for part in expected:
        assert part in str(caught.value)


@pytest.mark.fast
def test_a_given_label_list_fixes_ids_and_skips_unknown_labels(tmp_path):
    path = _write_csv(tmp_path / "test.csv", [["text", "label"], ["a", "pos"], ["b", "other"], ["c", "neg"]])
    result = read_textclass(path, TextClassPrepConfig(labels='["pos", "neg"]'))
    assert result.info["labels"] == ["pos", "neg"] and result.info["texts"] == 2
    assert [(i, ex.label) for chunk in result.chunks for i, ex in chunk.examples] == [(0, "pos"), (2, "neg")]
    assert result.skipped == [{"example_id": "row-3", "reason": "label not in the training label set",
                               "where": "line 3"}]
    ints = _write_csv(tmp_path / "ints.csv", [["text", "label"], ["a", "01"], ["b", "x"], ["c", "3"]])
    result = read_textclass(ints, TextClassPrepConfig(labels="[3, 1]"))
    assert result.info["label_type"] == "int" and result.info["labels"] == ["3", "1"]
    assert [ex.label for chunk in result.chunks for _, ex in chunk.examples] == ["1", "3"]
    assert [s["where"] for s in result.skipped] == ["line 3"]


def _long_text(words: list[str], min_bytes: int) -> tuple[str, int]:
    """A text of single-token words at least ``min_bytes`` long, and its token count."""
    block = _text(words, 200)
    copies = min_bytes // len(block) + 1
    return " ".join([block] * copies), 200 * copies


@pytest.mark.fast
@pytest.mark.parametrize("name,delimiter", [("long.csv", ","), ("long.tsv", "\t")])
def test_a_field_of_megabytes_is_read_whole(tmp_path, words, name, delimiter):
    """Python's csv module refuses a field over 128 KiB unless told otherwise (issue 27, 1)."""
    text, _ = _long_text(words, 3_000_000)
    path = _write_csv(tmp_path / name, [["text", "label"], ["short", "a"], [text, "b"], ["after", "a"]], delimiter)
    examples, skipped, info = read_examples(path)
    assert [ex.text for ex in examples] == ["short", text, "after"] and skipped == []
    assert [ex.line for ex in examples] == [2, 3, 4] and info["rows"] == 3


def test_a_multi_megabyte_csv_field_is_folded_like_any_text(tmp_path, words):
    """A 2 MB field becomes consecutive windows, the same features as the same text in JSON lines."""
    text, tokens = _long_text(words, 2_000_000)
    csv_path = _write_csv(tmp_path / "long.csv", [["text", "label"], ["short text", "a"], [text, "b"]])
    jsonl_path = tmp_path / "long.jsonl"
    jsonl_path.write_text("".join(json.dumps({"text": t, "label": label}) + "\n"
                                  for t, label in (("short text", "a"), (text, "b"))), encoding="utf-8")
    config = TextClassPrepConfig(max_seq_length=128)
    manifest = prepare_textclass(csv_path, tmp_path / "csv", config=config, nproc=1, mode="merge")
    prepare_textclass(jsonl_path, tmp_path / "jsonl", config=config, nproc=1, mode="merge")
    windows = -(-tokens // 126)  # 126 text tokens per window of 128
    assert manifest["counts"]["examples_converted"] == 2 and manifest["counts"]["examples_skipped"] == 0
    assert manifest["counts"]["features_out"] == windows + 1 and manifest["counts"]["texts_folded"] == 1
    table = sorted_by_feature_id(open_features(tmp_path / "csv"))
    assert table.column("num_windows").to_pylist()[1:] == [windows] * windows
    # The ids differ (row-<line>: the CSV has a header line); the windows are the same.
    from_jsonl = sorted_by_feature_id(open_features(tmp_path / "jsonl"))
    assert table.drop_columns(["example_id"]).equals(from_jsonl.drop_columns(["example_id"]))


# --- Parquet ------------------------------------------------------------------------------------
def _write_parquet(path: Path, columns: dict) -> Path:
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path)
    return path


@pytest.fixture
def fixture_parquet(tmp_path) -> Path:
    """Rows 1-6: kept, blank text, null label, null text, kept (integer ids), a repeated id."""
    return _write_parquet(tmp_path / "data.parquet", {
        "id": pa.array([11, 12, 13, 14, 15, 11], pa.int64()),
        "body": ["first text", "   ", "third text", None, "fifth text", "again"],
        "topic": ["pos", "neg", None, "neg", "neg", "pos"],
        "pair": ["p1", "p2", "p3", "p4", "p5", "p6"],
    })


@pytest.mark.fast
def test_parquet_reads_with_the_same_columns_and_counted_skips(fixture_parquet):
    examples, skipped, info = read_examples(fixture_parquet, text_column="body", label_column="topic",
                                            id_column="id", text_pair_column="pair")
    assert [(ex.example_id, ex.text, ex.text_pair, ex.label, ex.where) for ex in examples] == [
        ("11", "first text", "p1", "pos", "row 1"), ("15", "fifth text", "p5", "neg", "row 5")]
    assert skipped == [
        {"example_id": "12", "reason": "empty text", "where": "row 2"},
        {"example_id": "13", "reason": "missing label", "where": "row 3"},
        {"example_id": "14", "reason": "empty text", "where": "row 4"},
        {"example_id": "11", "reason": "duplicate id", "where": "row 6"},
    ]
    assert info == {"format": "parquet", "text_column": "body", "label_column": "topic", "text_pair_column": "pair",
                    "id_column": "id", "label_type": "str", "labels": ["neg", "pos"], "rows": 6, "texts": 2}
    # The extension decides, or --format for another name.
    renamed = fixture_parquet.rename(fixture_parquet.with_suffix(".bin"))
    assert read_examples(renamed, "parquet", "body", "topic")[0][0].text == "first text"


@pytest.mark.fast
def test_parquet_numbers_and_nan_read_as_a_csv_cell_would(tmp_path):
    path = _write_parquet(tmp_path / "scores.pq", {"text": ["a", "b", "c", "d"], "label": [3, 1, None, 3],
                                                   "score": [0.5, float("nan"), 2.0, None]})
    examples, skipped, info = read_examples(path)
    assert info["label_type"] == "int" and info["labels"] == ["1", "3"] and [ex.label for ex in examples] == ["3", "1", "3"]
    assert skipped == [{"example_id": "row-3", "reason": "missing label", "where": "row 3"}]
    examples, skipped, _ = read_examples(path, label_column="score", label_type="float")
    assert [ex.label for ex in examples] == [0.5, 2.0] and [s["where"] for s in skipped] == ["row 2", "row 4"]


@pytest.mark.fast
def test_parquet_errors_name_the_file_and_what_it_has(tmp_path, fixture_parquet):
    with pytest.raises(TextClassFormatError) as caught:
        read_examples(fixture_parquet, text_column="Body", label_column="topic")
    assert str(caught.value) == (f"{fixture_parquet}: no column 'Body' (text_column); the file has columns: "
                                 "'id', 'body', 'topic', 'pair'")
    nested = _write_parquet(tmp_path / "nested.parquet", {"text": [["a", "b"]], "label": ["x"]})
    with pytest.raises(TextClassFormatError, match=r"nested.parquet: column 'text' holds list<\w+: string>, not texts"):
        read_examples(nested)
    empty = _write_parquet(tmp_path / "empty.parquet", {"text": pa.array([], pa.string()),
                                                        "label": pa.array([], pa.string())})
    with pytest.raises(TextClassFormatError, match="empty.parquet: no data rows"):
        read_examples(empty)
    fake = tmp_path / "fake.parquet"
    fake.write_text("text,label\na,b\n")
    with pytest.raises(TextClassFormatError, match="fake.parquet: not a readable Parquet file"):
        read_examples(fake)


@pytest.mark.fast
def test_without_a_label_column_every_text_is_kept_unlabelled(fixture_parquet, fixture_csv):
    """``label_column=None``: texts to predict; a row without a label is no reason to skip it."""
    examples, skipped, info = read_examples(fixture_parquet, text_column="body", label_column=None)
    assert [(ex.example_id, ex.label) for ex in examples] == [("row-1", None), ("row-3", None), ("row-5", None),
                                                              ("row-6", None)]
    assert [s["where"] for s in skipped] == ["row 2", "row 4"]
    assert (info["label_column"], info["label_type"], info["labels"], info["texts"]) == (None, None, [], 4)
    examples, skipped, _ = read_examples(fixture_csv, text_column="body", label_column=None, id_column="id")
    assert [ex.example_id for ex in examples] == ["a", "b", "c", "e", "f"]  # e has no label: kept
    assert [s["reason"] for s in skipped] == ["empty text", "empty id", "duplicate id"]


def test_prepare_reads_parquet(fixture_parquet, tmp_path):
    config = TextClassPrepConfig(max_seq_length=MAX_SEQ_LENGTH, text_column="body", label_column="topic",
                                 id_column="id")
    manifest = prepare_textclass(fixture_parquet, tmp_path / "out", config=config, nproc=1, mode="merge")
    assert manifest["input"]["format"] == "parquet" and manifest["split"] == "data"
    assert manifest["counts"]["examples_in"] == 6 and manifest["counts"]["examples_converted"] == 2
    assert [s["where"] for s in manifest["skipped"]] == ["row 2", "row 3", "row 4", "row 6"]
    assert open_features(tmp_path / "out").column("example_id").to_pylist() == ["11", "15"]
