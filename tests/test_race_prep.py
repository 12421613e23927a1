"""RACE reading and features: both layouts on real files, the tokenizer's own layout, skips and bad input."""

from __future__ import annotations

import json
import tarfile

import pytest

from tests.conftest import shared_data
from prep.__main__ import main as prep_main
from tasks.race.prep import RacePrepConfig, prepare_race
from tasks.race.read import RaceFormatError, input_digest, qa_text, read_race

PICK = {"RACE/dev/middle": 4, "RACE/dev/high": 3, "RACE/test/high": 1}  # files taken per folder


@pytest.fixture(scope="module")
def release_tree(tmp_path_factory):
    """A few real article files of RACE/dev (and one of test, so the root holds two splits), extracted from the
    repacked tarball into the release tree; the rest of the archive is not unpacked."""
    tarball = shared_data("race/RACE.repacked.tar.gz")
    root = tmp_path_factory.mktemp("race_tree")
    left = dict(PICK)
    with tarfile.open(tarball, "r:gz") as archive:
        for member in archive:
            folder = member.name.rsplit("/", 1)[0]
            if member.isfile() and left.get(folder):
                archive.extract(member, root, filter="data")
                left[folder] -= 1
            if not any(left.values()):
                break
    assert not any(left.values()), left
    return root / "RACE"


def jsonl_of(tree_split, path):
    """The JSON Lines file the data README describes for these files: middle then high, by number, bytes + \\n."""
    lines = []
    for level in ("middle", "high"):
        for name in sorted((tree_split / level).iterdir(), key=lambda p: int(p.stem)):
            lines.append(name.read_bytes().rstrip(b"\n") + b"\n")
    path.write_bytes(b"".join(lines))
    return path


def test_both_layouts_read_the_same_questions_and_digest(release_tree, tmp_path):
    jsonl = jsonl_of(release_tree / "dev", tmp_path / "dev.jsonl")
    from_file = read_race(jsonl)
    from_split = read_race(release_tree / "dev")
    from_root = read_race(release_tree, split="dev")
    assert from_file.questions_in == from_split.questions_in == from_root.questions_in > 20
    assert from_file.gold == from_split.gold == from_root.gold
    assert [a.questions for a in from_file.articles] == [a.questions for a in from_split.articles]
    assert {g.level for g in from_file.gold} == {"middle", "high"}
    first_middle = min((release_tree / "dev" / "middle").iterdir(), key=lambda p: int(p.stem))
    assert from_file.gold[0].question_id == json.loads(first_middle.read_text())["id"].removesuffix(".txt") + "-0"
    assert input_digest(release_tree / "dev") == input_digest(jsonl) == input_digest(release_tree, "dev")
    with pytest.raises(RaceFormatError, match="--split"):
        read_race(release_tree)


@pytest.mark.fast
def test_the_shared_jsonl_is_the_folder_tree_of_the_readme():
    """The real dev.jsonl: its checksum is the README's, and its first questions are those of RACE/dev/middle/1.txt."""
    dev = read_race(shared_data("race/dev.jsonl"), max_questions=200)
    assert input_digest(shared_data("race/dev.jsonl")) == "d0518af08400eefb243033ba13491e4a9b5a0bd05c9a4dc98a0c6479335c325d"
    assert dev.questions_in == 200 and not dev.skipped


@pytest.mark.fast
def test_every_nth_spreads_a_subset_over_both_levels():
    full = read_race(shared_data("race/dev.jsonl"))
    assert full.questions_in == 4887 and len(full.gold) == 4887
    assert sum(g.level == "middle" for g in full.gold) == 1436
    spread = read_race(shared_data("race/dev.jsonl"), every_nth=19)
    assert spread.gold == full.gold[::19] and {g.level for g in spread.gold} == {"middle", "high"}


def test_features_are_the_tokenizers_pair_encoding_with_the_passage_cut_first(release_tree, tokenizer_dir,
                                                                             hf_tokenizer, tmp_path):
    length = 96
    manifest = prepare_race(release_tree / "dev", tmp_path / "f", tokenizer_dir, RacePrepConfig(max_seq_length=length),
                            nproc=1, articles_per_chunk=3)
    from prep.features import open_features

    table = open_features(tmp_path / "f").sort_by("feature_id")
    data = read_race(release_tree / "dev")
    questions = [(a.article, q) for a in data.articles for q in a.questions]
    assert table.num_rows == len(questions) == manifest["counts"]["examples_converted"]
    assert manifest["counts"]["passages_truncated"] > 0 and manifest["input"]["format"] == "race-folder"
    assert manifest["input"]["sha256"] == input_digest(release_tree / "dev")
    rows = table.to_pylist()
    for row, (article, question) in zip(rows, questions):
        assert row["example_id"] == question.question_id and row["label"] == question.label
        assert len(row["input_ids"]) == 4  # four sequences per row
        for k, option in enumerate(question.options):
            qa = qa_text(question.question, option)
            expected = hf_tokenizer(article, qa, truncation="only_first", max_length=length)
            assert row["input_ids"][k] == expected["input_ids"]
            assert row["token_type_ids"][k] == expected["token_type_ids"]
            # the option is never cut: the question+option span is exactly its own tokens
            qa_ids = hf_tokenizer(qa, add_special_tokens=False)["input_ids"]
            assert row["input_ids"][k][row["qa_start"][k]:row["qa_end"][k]] == qa_ids
            passage = row["input_ids"][k][row["passage_start"][k]:row["passage_end"][k]]
            full = hf_tokenizer(article, add_special_tokens=False)["input_ids"]
            assert passage == full[:len(passage)] and len(row["input_ids"][k]) <= length
    assert any(len(seq) == length for row in rows for seq in row["input_ids"])


@pytest.mark.fast
def test_cloze_blanks_take_the_option():
    assert qa_text("In summer   _   make people feel cool.", "light clothes") == "In summer   light clothes   make people feel cool."
    assert qa_text("What is the passage about?", "Cats") == "What is the passage about? Cats"


def article(questions, options, answers, article_text="A short passage about cats.", id_="high7.txt"):
    return json.dumps({"answers": answers, "options": options, "questions": questions, "article": article_text,
                       "id": id_})


def test_unusable_questions_are_skipped_with_reasons(tmp_path, tokenizer_dir):
    four = ["a", "b", "c", "d"]
    lines = [
        article(["Q1?", "Q2?", "Q3?"], [four, ["a", "b", "c"], four], ["A", "B", "E"]),
        article(["Q?"], [four], ["C"], id_="middle3.txt"),
        article(["Q?"], [["x " * 80] * 4], ["D"], id_="middle4.txt"),  # question+option longer than the window
    ]
    path = tmp_path / "small.jsonl"
    path.write_text("\n".join(lines) + "\n")
    manifest = prepare_race(path, tmp_path / "f", tokenizer_dir, RacePrepConfig(max_seq_length=32), nproc=1)
    counts = manifest["counts"]
    assert (counts["examples_in"], counts["examples_converted"], counts["examples_skipped"]) == (5, 2, 3)
    reasons = {s["example_id"]: s["reason"] for s in manifest["skipped"]}
    assert reasons["high7-1"] == "3 options, not 4" and reasons["high7-2"] == "answer not one of A-D"
    assert reasons["middle4-0"].startswith("question+option takes")
    # gold keeps the question with three options (it can be scored, as wrong), not the one answered E
    assert [g.question_id for g in read_race(path).gold] == ["high7-0", "high7-1", "middle3-0", "middle4-0"]


@pytest.mark.fast
@pytest.mark.parametrize("content, message", [
    ('{"answers": ["A"], "options": [["a","b","c","d"]], "questions": ["q"]}\n', "missing field"),
    ('{"answers": ["A"], "options": [], "questions": ["q"], "article": "x"}\n', "differ in length"),
    ('{"answers": ["A"\n', "line 1: invalid JSON"),
])
def test_bad_input_is_an_error_naming_file_and_line(tmp_path, content, message, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(RaceFormatError, match=message):
        read_race(path)
    assert prep_main(["race", str(path), str(tmp_path / "out"), "--quiet"]) == 1
    assert message in capsys.readouterr().err and not (tmp_path / "out").exists()


@pytest.mark.fast
def test_missing_input_and_bad_flags(tmp_path, capsys):
    assert prep_main(["race", str(tmp_path / "none.jsonl"), str(tmp_path / "out"), "--quiet"]) == 1
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        prep_main(["race", str(tmp_path / "none.jsonl"), str(tmp_path / "out"), "--max-seq-length", "4"])
    with pytest.raises(RaceFormatError, match="not a RACE folder"):
        read_race(tmp_path)
