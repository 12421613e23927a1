"""SQuAD prep: parity with Hugging Face's run_qa recipe, modes, bad input, counts."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from bench.hf_recipe import load_examples, run_recipe
from prep.features import attention_mask, open_features, pad_rows, sorted_by_feature_id
from tasks.squad.prep import SquadPrepConfig, prepare_squad, window_spans
from tasks.squad.read import SquadFormatError
from tests.conftest import shared_data

# Large enough never to cut a SQuAD question, small enough to leave room for doc_stride 128.
NO_CUT_QUERY_LENGTH = 250

WORDS = ("alpha beta gamma delta river mountain castle unbelievably photosynthesis 1984 "
         "Zürich naïve co-operation U.S. don't e-mail (parenthesis) quote\" semi;colon").split()


def make_squad(path, num_contexts=6, seed=0, version2=False):
    """A SQuAD file with long multi-window contexts and answers placed everywhere, window ends included."""
    rng = random.Random(seed)
    paragraphs, n = [], 0
    for c in range(num_contexts):
        words = [rng.choice(WORDS) for _ in range(rng.randint(20, 260))]
        context = " ".join(words)
        qas = []
        for q in range(6):
            n += 1
            lo = rng.randrange(len(words))
            hi = min(len(words), lo + rng.randint(1, 4))
            if q == 5:  # the very last word: an answer at a window end in some windows
                lo, hi = len(words) - 1, len(words)
            start = len(" ".join(words[:lo])) + (1 if lo else 0)
            text = " ".join(words[lo:hi])
            assert context[start : start + len(text)] == text
            qa = {"id": f"q{n}", "question": ("  " if q == 0 else "") + f"what is {rng.choice(WORDS)} number {q}?",
                  "answers": [{"text": text, "answer_start": start}]}
            if version2 and q == 3:
                qa.update(is_impossible=True, answers=[])
            qas.append(qa)
        paragraphs.append({"context": context, "qas": qas})
    payload = {"version": "v2.0" if version2 else "1.1", "data": [{"title": "t", "paragraphs": paragraphs}]}
    path.write_text(json.dumps(payload))
    return path


def subset(src, dst, articles):
    payload = json.loads(src.read_text())
    payload["data"] = payload["data"][:articles]
    dst.write_text(json.dumps(payload))
    return dst


@pytest.fixture(params=["bert", "mpnet", "roberta"])
def family(request):
    """``(tokenizer folder, HF fast tokenizer)`` of each layout family: BERT's [CLS] q [SEP] c [SEP]
    with token types (WordPiece), MPNet's <s> q </s></s> c </s> without (WordPiece), and RoBERTa's
    (byte-level BPE, offsets trimmed of the leading space)."""
    from prep.tokenizer import load_fast_tokenizer

    fixture = {"bert": "tokenizer_dir", "mpnet": "mpnet_tokenizer_dir", "roberta": "roberta_tokenizer_dir"}
    folder = request.getfixturevalue(fixture[request.param])
    return folder, load_fast_tokenizer(folder)


def assert_train_parity(ours, ref, max_seq_length, tokenizer):
    """Row-for-row equality with run_qa, except where run_qa's start index runs off the window.

    run_qa walks the start index while offset[0] <= start_char; when the answer begins in the
    window's last context token the walk continues over [SEP] and padding (offsets (0, 0)) and
    labels a non-context token. We label that last context token. Those rows are checked to be
    exactly that case; every other value must be equal.
    """
    sep_id = tokenizer.sep_token_id
    assert ours["example_id"].to_pylist() == ref["example_id"]
    rows = ours["input_ids"].to_pylist()
    np.testing.assert_array_equal(pad_rows(rows, max_seq_length, tokenizer.pad_token_id), np.asarray(ref["input_ids"]))
    types = pad_rows(ours["token_type_ids"].to_pylist(), max_seq_length)
    if "token_type_ids" in ref:
        np.testing.assert_array_equal(types, np.asarray(ref["token_type_ids"]))
        assert types.any()  # BERT: the context's type 1
    else:  # the model takes no token types: what it sees without them
        assert "token_type_ids" not in tokenizer.model_input_names and not types.any()
    np.testing.assert_array_equal(attention_mask(rows, max_seq_length), np.asarray(ref["attention_mask"]))
    np.testing.assert_array_equal(ours["end_positions"].to_numpy(), np.asarray(ref["end_positions"]))
    starts, ref_starts = ours["start_positions"].to_numpy(), np.asarray(ref["start_positions"])
    for i in np.flatnonzero(starts != ref_starts):
        last_context_token = len(rows[i]) - 2
        assert ref_starts[i] >= len(rows[i]) - 1 or rows[i][ref_starts[i]] == sep_id, i
        assert starts[i] == last_context_token == ours["end_positions"][i].as_py(), i
    return int((starts != ref_starts).sum())


@pytest.mark.parametrize("version2", [False, True])
def test_train_parity_on_fixture(tmp_path, family, version2):
    tokenizer_dir, hf_tokenizer = family
    src = make_squad(tmp_path / "in.json", version2=version2)
    config = SquadPrepConfig(max_seq_length=64, doc_stride=16, max_query_length=30)
    manifest = prepare_squad(src, tmp_path / "out", tokenizer_dir, config, nproc=1)
    ours = sorted_by_feature_id(open_features(tmp_path / "out"))
    ref = run_recipe(load_examples(src), hf_tokenizer, 64, 16)
    assert_train_parity(ours, ref, 64, hf_tokenizer)
    assert manifest["counts"]["multi_window_questions"] > 0
    if version2:
        assert manifest["input"]["version_2_with_negative"]
        assert_impossible_rows_point_at_cls(ours, impossible_ids(src))


def impossible_ids(src) -> set[str]:
    payload = json.loads(src.read_text())
    return {qa["id"] for a in payload["data"] for p in a["paragraphs"] for qa in p["qas"] if qa.get("is_impossible")}


def assert_impossible_rows_point_at_cls(table, impossible: set[str]):
    """Every window of an unanswerable question is labelled start = end = 0 ([CLS]); no answerable one is."""
    assert impossible
    labels = zip(table["example_id"].to_pylist(), table["start_positions"].to_pylist(),
                 table["end_positions"].to_pylist())
    rows = {qid: [] for qid in impossible}
    for qid, start, end in labels:
        if qid in impossible:
            rows[qid].append((start, end))
    assert all(rows.values()), "every unanswerable question has at least one feature"
    assert {label for windows in rows.values() for label in windows} == {(0, 0)}


@pytest.mark.parametrize("family", ["bert", "mpnet"], indirect=True)  # RoBERTa's is trained on dev, not train
def test_train_parity_on_real_squad(tmp_path, family):
    tokenizer_dir, hf_tokenizer = family
    v1 = subset(shared_data("squad/train-v1.1.reconstructed.json"), tmp_path / "v1.json", articles=12)
    v2 = subset(shared_data("squad/dev-v2.0.reconstructed.json"), tmp_path / "v2.json", articles=3)
    config = SquadPrepConfig(max_seq_length=384, doc_stride=128, max_query_length=NO_CUT_QUERY_LENGTH)
    for src in (v1, v2):
        out = tmp_path / f"out-{src.stem}"
        prepare_squad(src, out, tokenizer_dir, config, nproc=2, reserve_cpus=0)
        ours = sorted_by_feature_id(open_features(out))
        ref = run_recipe(load_examples(src), hf_tokenizer, 384, 128)
        assert ours.num_rows == len(ref["input_ids"]) > 500
        assert_train_parity(ours, ref, 384, hf_tokenizer)
    assert len(impossible_ids(v2)) > 300  # dev-v2.0's first 3 articles: a third unanswerable
    assert_impossible_rows_point_at_cls(ours, impossible_ids(v2))


def test_eval_offsets_match_recipe(tmp_path, family):
    tokenizer_dir, hf_tokenizer = family
    src = make_squad(tmp_path / "in.json", version2=True)
    config = SquadPrepConfig(max_seq_length=64, doc_stride=16, max_query_length=30, split="eval")
    prepare_squad(src, tmp_path / "out", tokenizer_dir, config, nproc=1)
    ours = sorted_by_feature_id(open_features(tmp_path / "out"))
    ref = run_recipe(load_examples(src), hf_tokenizer, 64, 16, split="eval")
    assert ours["example_id"].to_pylist() == ref["example_id"]
    for mine, theirs in zip(ours["offset_mapping"].to_pylist(), ref["offset_mapping"]):
        padded = [tuple(o) if o is not None else None for o in mine] + [None] * (len(theirs) - len(mine))
        assert padded == [tuple(o) if o is not None else None for o in theirs]


def test_modes_give_same_features(tmp_path, tokenizer_dir):
    src = make_squad(tmp_path / "in.json", num_contexts=20, seed=3)
    config = SquadPrepConfig(max_seq_length=64, doc_stride=16, max_query_length=30)
    tables = {}
    for mode in ("shards", "merge"):
        manifest = prepare_squad(src, tmp_path / mode, tokenizer_dir, config, nproc=2, mode=mode,
                                 contexts_per_chunk=2, reserve_cpus=0)
        assert manifest["mode"] == mode and manifest["nproc"] == 2
        tables[mode] = sorted_by_feature_id(open_features(tmp_path / mode))
    # One shard per worker that converted a chunk: a worker slow to start may get none (seen in CI), so
    # 1 or 2 here; that both workers write when both work is the pool test's (tests/test_prep_pool.py).
    shards = json.loads((tmp_path / "shards" / "manifest.json").read_text())["files"]
    assert 1 <= len(shards) <= 2 and len({f["worker"] for f in shards}) == len(shards)
    assert sum(f["rows"] for f in shards) == tables["shards"].num_rows
    assert tables["shards"].equals(tables["merge"])
    ids = tables["merge"]["feature_id"].to_numpy()
    np.testing.assert_array_equal(ids, np.arange(len(ids)))  # dense and unique
    # ids follow example order: example_index never decreases along feature ids
    assert (np.diff(tables["merge"]["example_index"].to_numpy()) >= 0).all()


def test_question_truncation_and_windows(tmp_path, tokenizer_dir):
    src = make_squad(tmp_path / "in.json")
    config = SquadPrepConfig(max_seq_length=48, doc_stride=8, max_query_length=5)
    manifest = prepare_squad(src, tmp_path / "out", tokenizer_dir, config, nproc=1)
    table = open_features(tmp_path / "out")
    assert manifest["counts"]["truncated_questions"] == manifest["counts"]["questions"]
    assert max(len(r) for r in table["input_ids"].to_pylist()) <= 48
    for types in table["token_type_ids"].to_pylist():
        assert types[:7] == [0] * 7 and types[7] == 1  # [CLS] + 5 question tokens + [SEP]


def test_max_articles_keeps_the_first_articles(tmp_path, tokenizer_dir):
    payload = {"data": [{"paragraphs": [{"context": f"Article {i} text.", "qas": [
        {"id": f"q{i}", "question": "Which?", "answers": [{"text": f"Article {i}", "answer_start": 0}]}]}]}
        for i in range(5)]}
    src = tmp_path / "in.json"
    src.write_text(json.dumps(payload))
    manifest = prepare_squad(src, tmp_path / "out", tokenizer_dir, SquadPrepConfig(max_articles=2), nproc=1)
    assert manifest["input"]["articles_used"] == 2 and manifest["input"]["articles_in_file"] == 5
    assert open_features(tmp_path / "out")["example_id"].to_pylist() == ["q0", "q1"]


@pytest.mark.fast
def test_window_spans_overlap_by_stride():
    assert window_spans(10, 20, 4) == [(0, 10)]
    spans = window_spans(50, 20, 4)
    assert spans == [(0, 20), (16, 36), (32, 50)]
    assert all(a[1] - b[0] == 4 for a, b in zip(spans, spans[1:]))


@pytest.mark.fast
def test_config_rejects_stride_that_cannot_advance():
    with pytest.raises(ValueError, match="doc_stride"):
        SquadPrepConfig(max_seq_length=128, doc_stride=100, max_query_length=64)
    with pytest.raises(ValueError, match="split"):
        SquadPrepConfig(split="dev")


def test_bad_answers_are_skipped_with_reasons(tmp_path, tokenizer_dir):
    context = "Ada Lovelace wrote the first program."
    qas = [
        {"id": "ok", "question": "Who?", "answers": [{"text": "Ada Lovelace", "answer_start": 0}]},
        {"id": "shifted", "question": "Who?", "answers": [{"text": "Ada Lovelace", "answer_start": 3}]},
        {"id": "blank", "question": "   ", "answers": [{"text": "Ada", "answer_start": 0}]},
        {"id": "ok", "question": "Again?", "answers": [{"text": "Ada", "answer_start": 0}]},
        {"id": "noanswer", "question": "What?", "answers": []},
    ]
    payload = {"data": [{"paragraphs": [{"context": context, "qas": qas},
                                        {"context": "  ", "qas": [{"id": "empty", "question": "Q?", "answers": []}]}]}]}
    src = tmp_path / "in.json"
    src.write_text(json.dumps(payload))
    manifest = prepare_squad(src, tmp_path / "train", tokenizer_dir, SquadPrepConfig(split="train"), nproc=1)
    counts = manifest["counts"]
    assert counts["examples_in"] == 6 == counts["examples_converted"] + counts["examples_skipped"]
    assert counts["examples_converted"] == 1
    reasons = {s["example_id"]: s["reason"] for s in manifest["skipped"]}
    assert reasons == {
        "shifted": "answer_start does not point at the answer text",
        "blank": "empty question",
        "ok": "duplicate question id",
        "noanswer": "no answer for an answerable question",
        "empty": "empty context",
    }
    assert manifest["skipped"][0]["where"] == "data[0].paragraphs[0].qas[1]"
    # The eval split keeps answer problems (scored on answer texts) and labels them [CLS].
    manifest = prepare_squad(src, tmp_path / "eval", tokenizer_dir, SquadPrepConfig(split="eval"), nproc=1)
    assert manifest["counts"]["examples_converted"] == 3
    assert manifest["input"]["eval_questions_without_span_label"] == 2


@pytest.mark.fast
@pytest.mark.parametrize("content, message", [
    (b'{"data": [{"paragraphs": [{"context": "x", "qas": [}]}]}', r"in\.json: line 1 column 52: malformed JSON \(Expecting value\)"),
    (b'{"data": [{"paragraphs": [{"qas": []}]}]}', r"in\.json: data\[0\]\.paragraphs\[0\]: missing field 'context'"),
    (b'{"data": [{"paragraphs": [{"context": "x", "qas": [{"id": "a", "answers": []}]}]}]}',
     r"data\[0\]\.paragraphs\[0\]\.qas\[0\]: missing field 'question'"),
    (b'{"data": [{"paragraphs": [{"context": "caf\xe9", "qas": []}]}]}', r"in\.json: line 1 \(byte 42\): not UTF-8 \(invalid continuation byte\)"),
    (b'{"version": "1.1"}', r"top level: missing field 'data'"),
])
def test_malformed_input_names_file_and_place(tmp_path, tokenizer_dir, content, message):
    src = tmp_path / "in.json"
    src.write_bytes(content)
    with pytest.raises(SquadFormatError, match=message):
        prepare_squad(src, tmp_path / "out", tokenizer_dir, nproc=1)
    assert not (tmp_path / "out").exists()
    assert list(tmp_path.iterdir()) == [src]  # no temp folder left behind


@pytest.mark.fast
def test_bad_tokenizer_folder_is_a_clear_error(tmp_path):
    src = make_squad(tmp_path / "in.json")
    with pytest.raises(FileNotFoundError, match="no tokenizer files"):
        prepare_squad(src, tmp_path / "out", tmp_path, nproc=1)


def test_real_dev_eval_features(tmp_path, tokenizer_dir):
    src = subset(shared_data("squad/dev-v1.1.json"), tmp_path / "dev.json", articles=2)
    manifest = prepare_squad(src, tmp_path / "out", tokenizer_dir, SquadPrepConfig(split="eval"), nproc=1)
    table = open_features(tmp_path / "out")
    payload = json.loads(src.read_text())
    contexts = {qa["id"]: p["context"] for a in payload["data"] for p in a["paragraphs"] for qa in p["qas"]}
    answers = {qa["id"]: {x["text"] for x in qa["answers"]} for a in payload["data"] for p in a["paragraphs"]
               for qa in p["qas"]}
    assert manifest["counts"]["examples_converted"] == len(contexts)
    hits = labelled = 0
    for row in table.to_pylist():
        s, e = row["start_positions"], row["end_positions"]
        if s == 0:
            continue
        labelled += 1
        # The labelled tokens, mapped back through the offsets, cover a gold answer (whole tokens
        # may run past it: dev-v1.1 has "ten" answered inside "contenders").
        start, end = row["offset_mapping"][s][0], row["offset_mapping"][e][1]
        span = contexts[row["example_id"]][start:end]
        hits += any(gold in span for gold in answers[row["example_id"]])
    assert labelled > 900 and hits == labelled
