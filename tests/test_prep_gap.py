"""GAP prep: spans point at the right words, skips are accounted for, modes agree, bad files fail."""

from __future__ import annotations

import csv
import re
import unicodedata
from pathlib import Path

import pyarrow as pa
import pytest

from prep.features import open_features, sorted_by_feature_id
from tasks.gap.prep import GapPrepConfig, build_feature, prepare_gap, window_start
from tasks.gap.read import GapExample, GapFormatError, read_gap
from prep.tokenizer import BertTokens
from tests.conftest import shared_data

HEADER = ["ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "A-coref", "B", "B-offset",
          "B-coref", "URL"]
MAX_SEQ_LENGTH = 32  # small, so the fixture's long rows need a window
FILLER = "The weather stayed mild and the harvest came in early that year. " * 6


def _at(text: str, word: str) -> int:
    """Offset of ``word`` as a whole word in ``text`` (first occurrence)."""
    match = re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text)
    assert match, (word, text)
    return match.start()


def _row(example_id, text, pronoun, a, a_coref, b, b_coref, **override) -> list[str]:
    row = {
        "ID": example_id, "Text": text, "Pronoun": pronoun, "Pronoun-offset": _at(text, pronoun) if text else 0,
        "A": a, "A-offset": _at(text, a) if text else 0, "A-coref": a_coref,
        "B": b, "B-offset": _at(text, b) if text else 0, "B-coref": b_coref,
        "URL": f"http://en.wikipedia.org/wiki/{example_id}",
    }
    row.update(override)
    return [str(row[name]) for name in HEADER]


# (row, expected label, expected gender) for rows that become features; None for skipped rows.
FIXTURE = [
    (_row("t-1", "Alice Smith met Bob Jones in Paris. She thanked him.", "She",
          "Alice Smith", "TRUE", "Bob Jones", "FALSE"), (0, "F")),
    # Non-ASCII before the mentions: offsets are characters, not bytes.
    (_row("t-2", "Zoë Telford worked with Mark Ó Briain; later his career grew.", "his",
          "Zoë Telford", "FALSE", "Mark Ó Briain", "TRUE"), (1, "M")),
    (_row("t-3", "Peter Parker and Harry Osborn met, and Ned found himself alone.", "himself",
          "Peter Parker", "FALSE", "Harry Osborn", "FALSE"), (2, "M")),
    # Longer than the window: it must keep P, A and B.
    (_row("t-4", FILLER + "Anna Lee told Maria Chen that she would return. " + FILLER, "she",
          "Anna Lee", "TRUE", "Maria Chen", "FALSE"), (0, "F")),
    # P, A and B further apart than the window.
    (_row("t-5", "Tom Hardy arrived. " + FILLER + "Later Sam Neill said he agreed.", "he",
          "Tom Hardy", "TRUE", "Sam Neill", "FALSE"), None),
    (_row("t-6", "Kim Ray met Lou Park. He left.", "He", "Kim Ray", "TRUE", "Lou Park", "FALSE",
          **{"A-offset": 1}), None),
    (_row("t-7", "Kim Ray met Lou Park. He left.", "He", "Kim Ray", "TRUE", "Lou Park", "TRUE"), None),
    (_row("t-8", "Kim Ray met Lou Park. He left.", "He", "Kim Ray", "maybe", "Lou Park", "FALSE"), None),
    (_row("t-9", "Kim Ray met Lou Park. They left.", "They", "Kim Ray", "TRUE", "Lou Park", "FALSE"), None),
    (_row("t-10", "", "he", "Kim Ray", "TRUE", "Lou Park", "FALSE"), None),
    (_row("t-1", "Kim Ray met Lou Park. He left.", "He", "Kim Ray", "TRUE", "Lou Park", "FALSE"), None),
    # Lower-case coref values (the scorer accepts them), an upper-case pronoun, literal quotes.
    (_row("t-12", 'Ravi "Pandit" Shankar taught George Harrison; HIS music changed.', "HIS",
          'Ravi "Pandit" Shankar', "false", "George Harrison", "true"), (1, "M")),
]
EXPECTED_SKIPS = {
    "t-5": ("P, A and B span more than 30 tokens", 6),
    "t-6": ("A-offset does not point at A", 7),
    "t-7": ("A-coref and B-coref both TRUE", 8),
    "t-8": ("coref value not TRUE or FALSE", 9),
    "t-9": ("pronoun has no gender", 10),
    "t-10": ("empty text", 11),
    "t-1": ("duplicate ID", 12),
}


def _write_tsv(path: Path, rows: list[list[str]]) -> Path:
    path.write_text("\n".join("\t".join(r) for r in [HEADER, *rows]) + "\n", encoding="utf-8")
    return path


def _normalise(text: str) -> str:
    """Lower-case, accents stripped, whitespace removed: how an uncased WordPiece decode compares."""
    text = unicodedata.normalize("NFKD", text.lower())
    return "".join(c for c in text if not unicodedata.combining(c) and not c.isspace())


@pytest.fixture(scope="module")
def fixture_tsv(tmp_path_factory) -> Path:
    return _write_tsv(tmp_path_factory.mktemp("gap") / "gap-fixture.tsv", [row for row, _ in FIXTURE])


@pytest.fixture(scope="module")
def runs(fixture_tsv, tmp_path_factory):
    """The fixture prepared both ways: shards on 2 workers, merged on 1, different chunking."""
    out = tmp_path_factory.mktemp("gap-out")
    config = GapPrepConfig(max_seq_length=MAX_SEQ_LENGTH)
    shards = prepare_gap(fixture_tsv, out / "shards", config=config, nproc=2, mode="shards",
                         rows_per_chunk=2, reserve_cpus=0)
    merge = prepare_gap(fixture_tsv, out / "merge", config=config, nproc=1, mode="merge", rows_per_chunk=5)
    return {"shards": (shards, out / "shards"), "merge": (merge, out / "merge")}


def _check_spans(table: pa.Table, names: dict, tokenizer, max_seq_length: int) -> None:
    """Every feature's P/A/B spans decode to its mention, and segment_ids mark exactly them."""
    rows = table.to_pylist()
    for row in rows:
        ids, segments = row["input_ids"], row["segment_ids"]
        assert len(ids) == len(segments) <= max_seq_length
        assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
        expected_segments = [0] * len(ids)
        for key, value, column in (("p", 1, "Pronoun"), ("a", 2, "A"), ("b", 3, "B")):
            start, end = row[f"{key}_start"], row[f"{key}_end"]
            assert 1 <= start < end <= len(ids) - 1, (row["example_id"], key)
            decoded = tokenizer.decode(ids[start:end])
            assert _normalise(decoded) == _normalise(names[row["example_id"]][column]), (row["example_id"], key)
            expected_segments[start:end] = [value] * (end - start)
        assert segments == expected_segments, row["example_id"]


def test_spans_labels_and_gender(runs, hf_tokenizer):
    manifest, out_dir = runs["merge"]
    table = sorted_by_feature_id(open_features(out_dir))
    assert table.schema.names == manifest["columns"]
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert table.schema.field("segment_ids").type == pa.list_(pa.int8())
    kept = [(row, expected) for row, expected in FIXTURE if expected is not None]
    names = {row[0]: dict(zip(HEADER, row)) for row, _ in kept}
    assert table.column("example_id").to_pylist() == [row[0] for row, _ in kept]
    assert table.column("feature_id").to_pylist() == list(range(len(kept)))
    # example_index is the row position in the file, skipped rows included.
    assert table.column("example_index").to_pylist() == [i for i, (_, e) in enumerate(FIXTURE) if e]
    assert table.column("label").to_pylist() == [label for _, (label, _) in kept]
    assert table.column("gender").to_pylist() == [gender for _, (_, gender) in kept]
    _check_spans(table, names, hf_tokenizer, MAX_SEQ_LENGTH)


def test_long_text_is_windowed_around_the_mentions(runs, hf_tokenizer):
    manifest, out_dir = runs["merge"]
    assert manifest["counts"]["windowed"] == 1
    rows = {r["example_id"]: r for r in open_features(out_dir).to_pylist()}
    long_row = rows["t-4"]
    assert len(long_row["input_ids"]) == MAX_SEQ_LENGTH
    window = hf_tokenizer.decode(long_row["input_ids"][1:-1])
    assert "anna lee told maria chen that she would return" in window
    # Centred: filler is kept on both sides of the mentions.
    assert window.index("anna") > 0 and not window.endswith("return.")
    assert all(len(r["input_ids"]) < MAX_SEQ_LENGTH for key, r in rows.items() if key != "t-4")


def test_skips_are_recorded_with_reason_and_line(runs):
    manifest, _ = runs["merge"]
    got = {(s["example_id"], s["reason"], s["where"]) for s in manifest["skipped"]}
    assert got == {(eid, reason, f"line {line}") for eid, (reason, line) in EXPECTED_SKIPS.items()}
    counts = manifest["counts"]
    assert counts["examples_in"] == len(FIXTURE) == manifest["input"]["rows"]
    assert counts["examples_skipped"] == len(EXPECTED_SKIPS)
    assert counts["examples_converted"] + counts["examples_skipped"] == counts["examples_in"]
    assert counts["features_out"] == counts["examples_converted"]
    assert sum(manifest["skip_reasons"].values()) == counts["examples_skipped"]
    assert manifest["config"] == {"max_seq_length": MAX_SEQ_LENGTH}
    assert manifest["dataset"] == "gap" and manifest["split"] == "fixture"


def test_shards_and_merge_give_the_same_table(runs):
    (shards, shards_dir), (merge, merge_dir) = runs["shards"], runs["merge"]
    assert shards["nproc"] == 2 and merge["nproc"] == 1
    a = sorted_by_feature_id(open_features(shards_dir))
    b = sorted_by_feature_id(open_features(merge_dir))
    assert a.equals(b)
    for key in ("counts", "skip_reasons", "skipped"):
        assert shards[key] == merge[key]


@pytest.mark.fast
def test_window_start_centres_and_clamps():
    assert window_start(num_tokens=20, room=30, lo=3, hi=5) == 0
    assert window_start(num_tokens=100, room=30, lo=50, hi=60) == 40  # 10 tokens each side
    assert window_start(num_tokens=100, room=30, lo=0, hi=4) == 0
    assert window_start(num_tokens=100, room=30, lo=96, hi=100) == 70


@pytest.mark.fast
def test_mention_inside_a_longer_word_keeps_the_whole_sub_token(hf_tokenizer):
    text = "Jordanian poet Sami Adel met her."
    enc = hf_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    special = BertTokens(hf_tokenizer.cls_token_id, hf_tokenizer.sep_token_id, hf_tokenizer.pad_token_id)
    example = GapExample(0, 2, "x", text, pronoun=(29, 32), a=(0, 6), b=(15, 24), label=2, gender="F")
    feature, reason = build_feature(example, ids, offsets, special, max_window_tokens=30)
    assert reason is None
    first, end = feature.a  # in input_ids, i.e. text token + 1
    assert offsets[first - 1][0] == 0 and offsets[end - 2][1] >= len("Jordan")
    assert hf_tokenizer.decode(ids[first - 1:end - 1]) == "jordanian"


@pytest.mark.fast
def test_config_is_validated():
    with pytest.raises(ValueError, match="max_seq_length"):
        GapPrepConfig(max_seq_length=4)
    with pytest.raises(TypeError):
        GapPrepConfig(max_seq_length=256.0)
    assert GapPrepConfig().max_window_tokens == 254


@pytest.mark.fast
def test_reader_accepts_bom_crlf_and_trailing_blank_lines(tmp_path):
    row = FIXTURE[0][0]
    path = tmp_path / "crlf.tsv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join("\t".join(r) for r in [HEADER, row]).encode() + b"\r\n\r\n")
    result = read_gap(path, rows_per_chunk=8)
    assert result.examples_in == 1 and not result.skipped
    assert result.chunks[0][0].example_id == "t-1" and result.info["blank_lines"] == 1


def _good_lines() -> list[bytes]:
    return ["\t".join(r).encode() for r in [HEADER, FIXTURE[0][0], FIXTURE[2][0]]]


def _bad_utf8():
    lines = _good_lines()
    lines[2] = lines[2].replace(b"Ned", b"N\xffd")
    return lines, 3, "not UTF-8"


def _wrong_column_count():
    lines = _good_lines()
    lines[1] = lines[1].rsplit(b"\t", 1)[0]
    return lines, 2, "10 tab-separated columns"


def _missing_header_column():
    lines = _good_lines()
    lines[0] = lines[0].replace(b"\tB-coref", b"")
    lines[1:] = [line.rsplit(b"\t", 1)[0] for line in lines[1:]]
    return lines, 1, "B-coref"


def _non_integer_offset():
    lines = _good_lines()
    fields = lines[2].split(b"\t")
    fields[HEADER.index("A-offset")] = b"12a"
    lines[2] = b"\t".join(fields)
    return lines, 3, "A-offset"


@pytest.mark.fast
@pytest.mark.parametrize("make", [_bad_utf8, _wrong_column_count, _missing_header_column, _non_integer_offset])
def test_malformed_file_names_file_and_line(tmp_path, make):
    lines, line_no, detail = make()
    path = tmp_path / "broken.tsv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    with pytest.raises(GapFormatError) as err:
        prepare_gap(path, tmp_path / "out", config=GapPrepConfig(MAX_SEQ_LENGTH))
    message = str(err.value)
    assert f"{path}: line {line_no}:" in message and detail in message
    assert not (tmp_path / "out").exists()


def test_real_gap_validation(tmp_path, hf_tokenizer):
    source = shared_data("gap/gap-validation.tsv")
    with open(source, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    manifest = prepare_gap(source, tmp_path / "gap-validation", nproc=1, mode="merge", rows_per_chunk=128)
    counts = manifest["counts"]
    # Every real gap-validation row becomes a feature: nothing is skipped at the default max_seq_length.
    assert (counts["examples_in"], counts["examples_converted"], counts["examples_skipped"]) == (454, 454, 0)
    assert counts["examples_in"] == len(rows)
    assert manifest["skipped"] == [] and manifest["skip_reasons"] == {}
    assert counts["features_out"] == counts["examples_converted"]
    table = sorted_by_feature_id(open_features(tmp_path / "gap-validation"))
    kept_ids = table.column("example_id").to_pylist()
    skipped_ids = [s["example_id"] for s in manifest["skipped"]]
    # Nothing silently lost: every row is either a feature or a recorded skip, exactly once.
    assert sorted(kept_ids + skipped_ids) == sorted(r["ID"] for r in rows)
    by_id = {r["ID"]: r for r in rows}
    _check_spans(table, by_id, hf_tokenizer, GapPrepConfig().max_seq_length)
    for example_id, label, gender in zip(kept_ids, table.column("label").to_pylist(),
                                         table.column("gender").to_pylist()):
        row = by_id[example_id]
        expected = 0 if row["A-coref"] == "TRUE" else 1 if row["B-coref"] == "TRUE" else 2
        assert label == expected, example_id
        assert gender == ("F" if row["Pronoun"].lower() in {"she", "her", "hers"} else "M"), example_id
