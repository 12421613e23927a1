"""n-best decoding on synthetic logits with known answers (no model)."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.squad.decode import EMPTY_TEXT, Window, decode_example, decode_predictions

pytestmark = pytest.mark.fast

CONTEXT = "The quick brown fox jumps over the lazy dog near the old river bank today."
WORDS = CONTEXT.split(" ")


def _word_offsets():
    offsets, position = [], 0
    for word in WORDS:
        offsets.append((position, position + len(word)))
        position += len(word) + 1
    return offsets


OFFSETS = _word_offsets()  # one "token" per word; token k is WORDS[k]
QUESTION_TOKENS = 3  # [CLS] q1 q2 [SEP] -> positions 0..3 are not context


def make_window(first: int, last: int, start_scores: dict[int, float], end_scores: dict[int, float],
                null: tuple[float, float] = (0.0, 0.0), low: float = -10.0, question: float = 50.0) -> Window:
    """A window over context words ``first..last`` with chosen logits for some words.

    Layout: [CLS] q q [SEP] word_first .. word_last [SEP]; ``*_scores`` are keyed by word index.
    """
    offsets = [None] * (QUESTION_TOKENS + 1) + OFFSETS[first : last + 1] + [None]
    start = np.full(len(offsets), low)
    end = np.full(len(offsets), low)
    start[0], end[0] = null
    for word, score in start_scores.items():
        start[QUESTION_TOKENS + 1 + word - first] = score
    for word, score in end_scores.items():
        end[QUESTION_TOKENS + 1 + word - first] = score
    # By default the question tokens get the highest logits of all: they must never be picked.
    start[1:QUESTION_TOKENS], end[1:QUESTION_TOKENS] = question, question
    return Window(start, end, offsets)


def test_single_window_known_answer():
    # pairs: quick..fox 15, brown..fox 12, quick..brown 11, brown 8
    window = make_window(0, len(WORDS) - 1, {1: 8.0, 2: 5.0}, {3: 7.0, 2: 3.0})
    result = decode_example(CONTEXT, [window])
    assert result.text == "quick brown fox"
    texts = [entry["text"] for entry in result.nbest]
    assert texts[:3] == ["quick brown fox", "brown fox", "quick brown"]
    assert len(set(texts)) == len(texts) <= 20
    assert sum(entry["probability"] for entry in result.nbest) == pytest.approx(1.0)
    assert result.nbest[0]["start_logit"] == 8.0 and result.nbest[0]["end_logit"] == 7.0


def test_max_answer_length_and_order():
    # quick..dog has the top pair but is 8 tokens long
    window = make_window(0, len(WORDS) - 1, {1: 10.0, 2: 5.0}, {8: 10.0, 3: 6.0, 0: 20.0})
    assert decode_example(CONTEXT, [window], max_answer_length=3).text == "quick brown fox"
    assert decode_example(CONTEXT, [window], max_answer_length=2).text == "brown fox"
    assert decode_example(CONTEXT, [window], max_answer_length=30).text == "quick brown fox jumps over the lazy dog"
    # the end logit on "The" (word 0) precedes every start: never a span


def test_n_best_size_limits_candidates():
    window = make_window(0, len(WORDS) - 1, {1: 8.0, 2: 5.0, 9: 4.0}, {3: 7.0, 2: 3.0, 10: 2.0}, question=-20.0)
    result = decode_example(CONTEXT, [window], n_best_size=2)
    # only the top-2 starts (words 1, 2) and top-2 ends (words 3, 2) are paired; 2 kept
    assert [e["text"] for e in result.nbest] == ["quick brown fox", "brown fox"]
    # as in bert / utils_qa, the top-n is taken over the whole window: tokens that cannot
    # start an answer (here the question, logits 50) use up the n-best slots
    crowded = make_window(0, len(WORDS) - 1, {1: 8.0}, {3: 7.0})
    assert decode_example(CONTEXT, [crowded], n_best_size=2).text == EMPTY_TEXT


def test_answer_in_second_of_two_overlapping_windows():
    # window A: words 0..8, window B: words 5..14 (overlap 5..8); answer "old river" = words 11..12
    a = make_window(0, 8, {1: 2.0}, {2: 2.0})
    b = make_window(5, 14, {11: 9.0}, {12: 8.0})
    result = decode_example(CONTEXT, [a, b])
    assert result.text == "old river"
    assert "quick brown" in [entry["text"] for entry in result.nbest]
    predictions, _, _ = decode_predictions(["e1", "e1"], {"e1": CONTEXT}, [a.start_logits, b.start_logits],
                                           [a.end_logits, b.end_logits], [a.offsets, b.offsets])
    assert predictions == {"e1": "old river"}


def test_span_in_overlap_scored_in_its_max_context_window():
    # "over the" = words 5..6 lies in both windows. Word 5 sits at position 5 of 9 in A
    # (min(5, 3) = 3 tokens of context) and at position 0 of 10 in B (0): A is its max context.
    a = make_window(0, 8, {5: 3.0}, {6: 3.0})
    b = make_window(5, 14, {5: 7.0}, {6: 7.0})
    result = decode_example(CONTEXT, [a, b])
    assert result.text == "over the"
    assert result.nbest[0]["start_logit"] == 3.0  # scored where the token has most context
    loose = decode_example(CONTEXT, [a, b], max_context_only=False)
    assert loose.text == "over the" and loose.nbest[0]["start_logit"] == 7.0
    assert [e["text"] for e in loose.nbest].count("over the") == 1  # texts are distinct


def test_version_2_null_score_and_threshold():
    # null = min over windows of start[0] + end[0]: window A 6 + 6 = 12, window B 1 + 1 = 2
    a = make_window(0, 8, {1: 2.0}, {2: 1.0}, null=(6.0, 6.0))
    b = make_window(5, 14, {11: 3.0}, {12: 3.0}, null=(1.0, 1.0))
    result = decode_example(CONTEXT, [a, b], version_2_with_negative=True)
    assert result.null_odds == pytest.approx(2.0 - 6.0)  # null 2 - best span 6
    assert result.text == "old river"
    assert "" in [entry["text"] for entry in result.nbest]
    # a threshold below the odds says no-answer
    assert decode_example(CONTEXT, [a, b], version_2_with_negative=True, null_score_diff_threshold=-5.0).text == ""
    # a strong null wins at the default threshold
    c = make_window(5, 14, {11: 3.0}, {12: 3.0}, null=(5.0, 4.0))
    strong = decode_example(CONTEXT, [c], version_2_with_negative=True)
    assert strong.text == "" and strong.null_odds == pytest.approx(3.0)
    assert strong.nbest[0]["text"] == ""
    # v1 ignores the null score entirely
    assert decode_example(CONTEXT, [c]).text == "old river"


def test_no_valid_span_falls_back_like_bert():
    offsets = [None] * 6
    window = Window(np.zeros(6), np.zeros(6), offsets)
    assert decode_example(CONTEXT, [window]).text == EMPTY_TEXT
    v2 = decode_example(CONTEXT, [window], version_2_with_negative=True)
    # As in bert / utils_qa: the placeholder is the best non-null entry, and the null score (0)
    # does not beat it by more than the threshold (0), so the placeholder is the answer...
    assert v2.text == EMPTY_TEXT and v2.null_odds == 0.0
    assert [e["text"] for e in v2.nbest] == [EMPTY_TEXT, ""]
    # ...and a no-answer is always spelled "" (the official v2.0 scripts' empty prediction).
    assert decode_example(CONTEXT, [window], version_2_with_negative=True, null_score_diff_threshold=-0.5).text == ""


def test_array_offsets_and_padding_logits():
    window = make_window(0, len(WORDS) - 1, {1: 8.0}, {3: 7.0})
    as_array = np.array([pair if pair is not None else (-1, -1) for pair in window.offsets])
    padded = Window(np.concatenate([window.start_logits, [99.0] * 5]),
                    np.concatenate([window.end_logits, [99.0] * 5]), as_array)
    assert decode_example(CONTEXT, [padded]).text == "quick brown fox"  # padding positions ignored


def test_decode_predictions_groups_interleaved_features():
    w1 = make_window(0, len(WORDS) - 1, {1: 8.0}, {3: 7.0})
    w2 = make_window(0, len(WORDS) - 1, {8: 8.0}, {8: 7.0})
    ids = ["b", "a"]
    predictions, null_odds, nbest = decode_predictions(
        ids, {"a": CONTEXT, "b": CONTEXT}, [w1.start_logits, w2.start_logits], [w1.end_logits, w2.end_logits],
        [w1.offsets, w2.offsets])
    assert predictions == {"b": "quick brown fox", "a": "dog"}
    assert set(nbest) == {"a", "b"} and set(null_odds) == {"a", "b"}
    with pytest.raises(KeyError, match="not in the data"):
        decode_predictions(["zzz"], {"a": CONTEXT}, [w1.start_logits], [w1.end_logits], [w1.offsets])
    with pytest.raises(ValueError, match="differ in length"):
        decode_predictions(["a", "a"], {"a": CONTEXT}, [w1.start_logits], [w1.end_logits], [w1.offsets])


def test_rejects_bad_arguments():
    window = make_window(0, 3, {1: 1.0}, {1: 1.0})
    with pytest.raises(ValueError):
        decode_example(CONTEXT, [window], n_best_size=0)
    with pytest.raises(ValueError):
        decode_example(CONTEXT, [])
    with pytest.raises(ValueError, match="past the end"):
        decode_example("short", [window])


def test_max_context_matches_berts_check_on_random_windows():
    from tasks.squad.decode import _max_context_flags

    rng = np.random.default_rng(0)
    for _ in range(50):
        num_tokens = int(rng.integers(5, 60))
        token_offsets = [(3 * k, 3 * k + 2) for k in range(num_tokens)]
        spans, begin = [], 0
        while True:  # (doc start, length) windows, overlapping by a random amount
            length = int(rng.integers(3, 20))
            spans.append((begin, min(length, num_tokens - begin)))
            if begin + length >= num_tokens:
                break
            begin += int(rng.integers(1, length + 1))
        starts, ends = [], []
        for first, length in spans:
            pad = int(rng.integers(1, 4))  # question / special tokens before the window
            offs = [(-1, -1)] * pad + token_offsets[first : first + length] + [(-1, -1)]
            starts.append(np.array([o[0] for o in offs]))
            ends.append(np.array([o[1] for o in offs]))
        flags = _max_context_flags(starts, ends)
        for w, (first, length) in enumerate(spans):
            for k in range(length):
                position = first + k
                best_score, best_span = None, None
                for index, (span_start, span_length) in enumerate(spans):  # bert's _check_is_max_context
                    end = span_start + span_length - 1
                    if position < span_start or position > end:
                        continue
                    score = min(position - span_start, end - position) + 0.01 * span_length
                    if best_score is None or score > best_score:
                        best_score, best_span = score, index
                pad = len(starts[w]) - length - 1
                assert flags[w][pad + k] == (best_span == w)
            assert not flags[w][0] and not flags[w][-1]
