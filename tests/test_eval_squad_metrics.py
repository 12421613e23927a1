"""SQuAD EM / F1: hand-checked cases, and equality with the official scripts' computation."""

from __future__ import annotations

import collections
import json
import random
import re
import string

import pytest

from tasks.squad.metrics import (
    PredictionIdError,
    compute_exact,
    compute_f1,
    evaluate_squad_predictions,
    evaluate_v1,
    evaluate_v2,
    exact_match_score_v1,
    f1_score_v1,
    normalize_answer,
)
from tests.conftest import shared_data

pytestmark = pytest.mark.fast


def _dataset(*qas, context="c"):
    return [{"title": "t", "paragraphs": [{"context": context, "qas": list(qas)}]}]


def _qa(qid, *answers, impossible=None):
    qa = {"id": qid, "question": "q?", "answers": [{"text": a, "answer_start": 0} for a in answers]}
    if impossible is not None:
        qa["is_impossible"] = impossible
    return qa


# --- normalisation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("The Quick, brown fox!", "quick brown fox"),
        ("an apple a day", "apple day"),
        ("theater anthem", "theater anthem"),  # articles only as whole words
        ("  hello\t\n  world ", "hello world"),
        ("U.S.", "us"),
        ("the", ""),
        (".", ""),
        ("Denver's (1990)", "denvers 1990"),
        ("1990\u20131995", "1990\u20131995"),  # en dash is not ASCII punctuation: kept, as officially
        ("THE BRONCOS", "broncos"),
        ("a-b", "ab"),  # punctuation removed before article removal: "ab" is not an article
        ("A. Lincoln", "lincoln"),  # "a." -> "a" -> removed
    ],
)
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


def test_f1_by_hand():
    # pred [cat, sat], gold [cat, sat, down]: P = 1, R = 2/3, F1 = 0.8
    assert compute_f1("a cat sat down", "the cat sat") == pytest.approx(0.8)
    assert f1_score_v1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # repeated tokens count once per occurrence: common = {cat: 1, dog: 1}
    assert compute_f1("cat dog dog", "cat cat dog") == pytest.approx(2 / 3)
    assert f1_score_v1("no overlap", "something else") == 0
    assert exact_match_score_v1("The Broncos!", "broncos")
    assert compute_exact("Broncos", "the broncos.") == 1


def test_max_over_gold_answers():
    data = _dataset(_qa("q1", "Denver Broncos", "Broncos", "the Denver Broncos team"))
    assert evaluate_v1(data, {"q1": "the Broncos"}) == {"exact_match": 100.0, "f1": 100.0}
    # F1 is the max over golds, not the F1 of the EM-best gold
    result = evaluate_v1(data, {"q1": "Denver"})
    assert result["exact_match"] == 0.0
    assert result["f1"] == pytest.approx(100 * 2 * (1 * 0.5) / 1.5)  # vs "Denver Broncos": P 1, R 1/2


def test_empty_gold_differs_between_v1_and_v2():
    # dev-v1.1 holds gold answers "." that normalise to nothing.
    data = _dataset(_qa("q1", "."))
    assert evaluate_v1(data, {"q1": "."}) == {"exact_match": 100.0, "f1": 0.0}  # v1.1: no shared token -> F1 0
    v2 = evaluate_v2(data, {"q1": "."})
    assert (v2["exact"], v2["f1"]) == (100.0, 100.0)  # v2.0: both empty -> agree
    data = _dataset(_qa("q1", ".", "x"))
    assert evaluate_v2(data, {"q1": "."})["exact"] == 0.0  # the "." gold is dropped, "x" remains


def test_v2_unanswerable_gold_is_empty_string():
    data = _dataset(_qa("q1", impossible=True), _qa("q2", impossible=True), _qa("q3", "Paris", impossible=False))
    result = evaluate_v2(data, {"q1": "", "q2": "London", "q3": "paris"})
    assert result["exact"] == pytest.approx(200 / 3)
    assert result["NoAns_exact"] == 50.0 and result["NoAns_total"] == 2
    assert result["HasAns_f1"] == 100.0 and result["HasAns_total"] == 1
    with pytest.raises(ValueError, match="no gold answer"):
        evaluate_v1(data, {"q1": "", "q2": "", "q3": "paris"})


def test_v2_threshold_and_best_threshold_by_hand():
    data = _dataset(
        _qa("q1", "Paris"), _qa("q2", "blue"), _qa("q3", impossible=True), _qa("q4", impossible=True)
    )
    preds = {"q1": "Paris", "q2": "red", "q3": "x", "q4": ""}
    na = {"q1": 0.2, "q2": -1.0, "q3": 0.5, "q4": 3.0}
    result = evaluate_squad_predictions(data, preds, version_2_with_negative=True, na_probs=na,
                                       null_score_diff_threshold=0.0)
    # na > 0 predicts no-answer for q1 (wrong), q3 and q4 (right); q2 keeps its wrong answer.
    assert result["exact"] == 50.0
    assert result["HasAns_exact"] == 0.0 and result["NoAns_exact"] == 100.0
    # Walking up the na order q2, q1, q3, q4 from "all null" (2 right): q2 +0, q1 +1 -> 3, q3 -1, q4 0.
    assert result["best_exact"] == 75.0 and result["best_exact_thresh"] == 0.2
    assert result["best_f1"] == 75.0 and result["best_f1_thresh"] == 0.2
    # Scoring at the best threshold reaches the best score.
    again = evaluate_squad_predictions(data, preds, version_2_with_negative=True, na_probs=na,
                                      null_score_diff_threshold=result["best_f1_thresh"])
    assert again["exact"] == 75.0


def test_prediction_id_errors():
    data = _dataset(_qa("q1", "a"), _qa("q2", "b"))
    with pytest.raises(PredictionIdError, match="1 question ids of the data have no prediction"):
        evaluate_v1(data, {"q1": "a"})
    with pytest.raises(PredictionIdError, match="not in the data"):
        evaluate_v1(data, {"q1": "a", "q2": "b", "zzz": "c"})
    with pytest.raises(PredictionIdError, match="not strings"):
        evaluate_v2(data, {"q1": "a", "q2": 3})
    with pytest.raises(PredictionIdError, match="na_probs lacks"):
        evaluate_v2(data, {"q1": "a", "q2": "b"}, na_probs={"q1": 0.0})


# --- the official scripts, as references ----------------------------------------------------
# Written out here (as published with SQuAD v1.1 / v2.0) so the comparison does not go through
# any code under test.


def _official_normalize(s):
    def remove_articles(text):
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _official_v1(dataset, predictions):
    def f1_score(prediction, ground_truth):
        prediction_tokens = _official_normalize(prediction).split()
        ground_truth_tokens = _official_normalize(ground_truth).split()
        common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
        num_same = sum(common.values())
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(prediction_tokens)
        recall = 1.0 * num_same / len(ground_truth_tokens)
        return (2 * precision * recall) / (precision + recall)

    def exact_match_score(prediction, ground_truth):
        return _official_normalize(prediction) == _official_normalize(ground_truth)

    def metric_max_over_ground_truths(metric_fn, prediction, ground_truths):
        return max(metric_fn(prediction, gt) for gt in ground_truths)

    f1 = exact_match = total = 0
    for article in dataset:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue
                ground_truths = list(map(lambda x: x["text"], qa["answers"]))
                prediction = predictions[qa["id"]]
                exact_match += metric_max_over_ground_truths(exact_match_score, prediction, ground_truths)
                f1 += metric_max_over_ground_truths(f1_score, prediction, ground_truths)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}


def _official_v2(dataset, preds, na_probs, na_prob_thresh):
    def get_tokens(s):
        return _official_normalize(s).split() if s else []

    def compute_exact_ref(a_gold, a_pred):
        return int(_official_normalize(a_gold) == _official_normalize(a_pred))

    def compute_f1_ref(a_gold, a_pred):
        gold_toks, pred_toks = get_tokens(a_gold), get_tokens(a_pred)
        common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
        num_same = sum(common.values())
        if len(gold_toks) == 0 or len(pred_toks) == 0:
            return int(gold_toks == pred_toks)
        if num_same == 0:
            return 0
        precision = 1.0 * num_same / len(pred_toks)
        recall = 1.0 * num_same / len(gold_toks)
        return (2 * precision * recall) / (precision + recall)

    qid_to_has_ans = {}
    exact_raw, f1_raw = {}, {}
    for article in dataset:
        for p in article["paragraphs"]:
            for qa in p["qas"]:
                qid_to_has_ans[qa["id"]] = bool(qa["answers"])
                gold_answers = [a["text"] for a in qa["answers"] if _official_normalize(a["text"])] or [""]
                exact_raw[qa["id"]] = max(compute_exact_ref(a, preds[qa["id"]]) for a in gold_answers)
                f1_raw[qa["id"]] = max(compute_f1_ref(a, preds[qa["id"]]) for a in gold_answers)

    def thresh(scores):
        return {q: float(not qid_to_has_ans[q]) if na_probs[q] > na_prob_thresh else s for q, s in scores.items()}

    def eval_dict(exact, f1, qids=None):
        qids = qids or list(exact)
        return {"exact": 100.0 * sum(exact[k] for k in qids) / len(qids),
                "f1": 100.0 * sum(f1[k] for k in qids) / len(qids), "total": len(qids)}

    def best(scores):
        cur = best_score = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
        best_t = 0.0
        for qid in sorted(na_probs, key=lambda k: na_probs[k]):
            diff = scores[qid] if qid_to_has_ans[qid] else (-1 if preds[qid] else 0)
            cur += diff
            if cur > best_score:
                best_score, best_t = cur, na_probs[qid]
        return 100.0 * best_score / len(scores), best_t

    exact_t, f1_t = thresh(exact_raw), thresh(f1_raw)
    out = {"exact": 100.0 * sum(exact_t.values()) / len(exact_t), "f1": 100.0 * sum(f1_t.values()) / len(f1_t),
           "total": len(exact_t)}
    for prefix, flag in (("HasAns", True), ("NoAns", False)):
        qids = [k for k, v in qid_to_has_ans.items() if v == flag]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in eval_dict(exact_t, f1_t, qids).items()})
    out["best_exact"], out["best_exact_thresh"] = best(exact_raw)
    out["best_f1"], out["best_f1_thresh"] = best(f1_raw)
    return out


def _perturb(text: str, rng: random.Random, other: str) -> str:
    words = text.split()
    choice = rng.randrange(9)
    if choice == 0 and len(words) > 1:
        return " ".join(words[1:])  # drop the first word
    if choice == 1:
        return "the " + text + " of it"  # extra tokens
    if choice == 2:
        return text.upper() + "."
    if choice == 3:
        return other  # a wrong answer from elsewhere
    if choice == 4:
        return ""
    if choice == 5:
        return "."
    return text  # the gold answer itself


# dev-v1.1's three questions with a gold answer "." (it normalises to ""): the one place where
# v1.1 and v2.0 scoring differ, so the v1.1 check must see them.
EMPTY_GOLD_QUESTIONS = {"5725bad5271a42140099d0c1", "5730b7ce069b5314008322c4", "57340d124776f419006617bf"}


def test_v1_matches_official_script_on_all_of_dev():
    payload = json.loads(shared_data("squad/dev-v1.1.json").read_text(encoding="utf-8"))
    dataset = payload["data"]  # all 48 articles, 10,570 questions
    rng = random.Random(0)
    qas = [qa for article in dataset for p in article["paragraphs"] for qa in p["qas"]]
    assert len(qas) == 10570
    empty_gold = {qa["id"] for qa in qas if any(not _official_normalize(a["text"]) for a in qa["answers"])}
    assert empty_gold == EMPTY_GOLD_QUESTIONS
    answers = [qa["answers"][0]["text"] for qa in qas]
    predictions = {qa["id"]: _perturb(rng.choice(qa["answers"])["text"], rng, rng.choice(answers)) for qa in qas}
    for qid in EMPTY_GOLD_QUESTIONS:
        predictions[qid] = "."  # v1.1: EM 1 (both normalise to "") but F1 0; v2.0 drops that gold
    ours, official = evaluate_v1(dataset, predictions), _official_v1(dataset, predictions)
    assert ours == official  # exact float equality: the last digit
    assert 20.0 < ours["exact_match"] < 90.0
    for qa in qas:
        if qa["id"] in EMPTY_GOLD_QUESTIONS:
            one = _dataset(qa)
            assert evaluate_v1(one, {qa["id"]: "."}) == _official_v1(one, {qa["id"]: "."}) == {
                "exact_match": 100.0, "f1": 0.0}
            assert evaluate_v2(one, {qa["id"]: "."})["exact"] == 0.0  # the difference the check covers


def test_v2_matches_official_script_on_dev_sample():
    payload = json.loads(shared_data("squad/dev-v2.0.reconstructed.json").read_text(encoding="utf-8"))
    dataset = payload["data"][::5]
    rng = random.Random(1)
    qas = [qa for article in dataset for p in article["paragraphs"] for qa in p["qas"]]
    spans = [qa["answers"][0]["text"] for qa in qas if qa["answers"]]
    preds, na = {}, {}
    for qa in qas:
        gold = rng.choice(qa["answers"])["text"] if qa["answers"] else rng.choice(["", rng.choice(spans)])
        preds[qa["id"]] = _perturb(gold, rng, rng.choice(spans)) if gold else gold
        na[qa["id"]] = round(rng.uniform(-5, 5), 3)
    for thresh in (0.0, 1.0, -2.5):
        ours = evaluate_v2(dataset, preds, na, na_prob_thresh=thresh)
        assert ours == _official_v2(dataset, preds, na, thresh)
