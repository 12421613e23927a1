"""SQuAD EM / F1 exactly as the official evaluation scripts compute them.

Two scripts, two sets of rules, and both matter to the last digit:

- ``evaluate-v1.1.py``: every gold answer counts (dev-v1.1 has three gold answers "." that
  normalise to nothing), F1 is 0 whenever no token is shared, and the result is
  ``{"exact_match", "f1"}``.
- ``evaluate-v2.0.py``: gold answers that normalise to nothing are dropped (an unanswerable
  question's only gold is ""), F1 is 1 when prediction and gold are both empty, the no-answer
  probabilities are thresholded, HasAns / NoAns splits are reported, and with ``na_probs``
  the best threshold is searched (``best_exact_thresh``, ``best_f1_thresh``).

The functions below keep the official ones' arithmetic and summation order, so the floats are
identical. Where the official scripts print a warning and go on (a missing prediction), these
raise :class:`PredictionIdError`: a silently partial score is worse than none.
"""

from __future__ import annotations

import collections
import re
import string

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


class PredictionIdError(ValueError):
    """Predictions and gold data disagree on the set of question ids."""


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def get_tokens(s: str) -> list[str]:
    if not s:
        return []
    return normalize_answer(s).split()


# ---------------------------------------------------------------------------------------------
# v1.1 rules
# ---------------------------------------------------------------------------------------------


def exact_match_score_v1(prediction: str, ground_truth: str) -> bool:
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def f1_score_v1(prediction: str, ground_truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def metric_max_over_ground_truths(metric_fn, prediction: str, ground_truths: list[str]):
    return max(metric_fn(prediction, ground_truth) for ground_truth in ground_truths)


def raw_scores_v1(dataset: list[dict], predictions: dict[str, str]) -> tuple[dict, dict]:
    """Per-question (exact, f1) under the v1.1 rules, in data order."""
    check_prediction_ids(dataset, predictions)
    exact, f1 = {}, {}
    for qa in iter_qas(dataset):
        ground_truths = [answer["text"] for answer in qa["answers"]]
        if not ground_truths:
            raise ValueError(
                f"question {qa['id']} has no gold answer; a v1.1 evaluation needs one "
                "(pass version_2_with_negative for SQuAD 2.0 data)"
            )
        prediction = predictions[qa["id"]]
        exact[qa["id"]] = metric_max_over_ground_truths(exact_match_score_v1, prediction, ground_truths)
        f1[qa["id"]] = metric_max_over_ground_truths(f1_score_v1, prediction, ground_truths)
    return exact, f1


def evaluate_v1(dataset: list[dict], predictions: dict[str, str]) -> dict[str, float]:
    """The official v1.1 evaluation: ``{"exact_match": %, "f1": %}`` over every question."""
    exact, f1 = raw_scores_v1(dataset, predictions)
    # Same accumulation as the official loop: running sums in data order, then one division.
    exact_match = f1_total = total = 0
    for qid in exact:
        total += 1
        exact_match += exact[qid]
        f1_total += f1[qid]
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1_total / total}


# ---------------------------------------------------------------------------------------------
# v2.0 rules
# ---------------------------------------------------------------------------------------------


def compute_exact(a_gold: str, a_pred: str) -> int:
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold: str, a_pred: str) -> float:
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        # Either is no-answer: F1 is 1 if they agree, 0 otherwise.
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def make_qid_to_has_ans(dataset: list[dict]) -> dict[str, bool]:
    return {qa["id"]: bool(qa["answers"]) for qa in iter_qas(dataset)}


def raw_scores_v2(dataset: list[dict], preds: dict[str, str]) -> tuple[dict, dict]:
    """Per-question (exact, f1) under the v2.0 rules, in data order."""
    check_prediction_ids(dataset, preds)
    exact_scores, f1_scores = {}, {}
    for qa in iter_qas(dataset):
        qid = qa["id"]
        gold_answers = [a["text"] for a in qa["answers"] if normalize_answer(a["text"])]
        if not gold_answers:
            # For unanswerable questions the only correct answer is the empty string.
            gold_answers = [""]
        a_pred = preds[qid]
        exact_scores[qid] = max(compute_exact(a, a_pred) for a in gold_answers)
        f1_scores[qid] = max(compute_f1(a, a_pred) for a in gold_answers)
    return exact_scores, f1_scores


def apply_no_ans_threshold(scores: dict, na_probs: dict, qid_to_has_ans: dict, na_prob_thresh: float) -> dict:
    new_scores = {}
    for qid, s in scores.items():
        pred_na = na_probs[qid] > na_prob_thresh
        new_scores[qid] = float(not qid_to_has_ans[qid]) if pred_na else s
    return new_scores


def make_eval_dict(exact_scores: dict, f1_scores: dict, qid_list: list[str] | None = None) -> dict:
    if not qid_list:
        total = len(exact_scores)
        return collections.OrderedDict(
            [
                ("exact", 100.0 * sum(exact_scores.values()) / total),
                ("f1", 100.0 * sum(f1_scores.values()) / total),
                ("total", total),
            ]
        )
    total = len(qid_list)
    return collections.OrderedDict(
        [
            ("exact", 100.0 * sum(exact_scores[k] for k in qid_list) / total),
            ("f1", 100.0 * sum(f1_scores[k] for k in qid_list) / total),
            ("total", total),
        ]
    )


def merge_eval(main_eval: dict, new_eval: dict, prefix: str) -> None:
    for k in new_eval:
        main_eval[f"{prefix}_{k}"] = new_eval[k]


def find_best_thresh(preds: dict, scores: dict, na_probs: dict, qid_to_has_ans: dict) -> tuple[float, float]:
    """The official search: answer questions in increasing na_prob order, keep the best total."""
    num_no_ans = sum(1 for k in qid_to_has_ans if not qid_to_has_ans[k])
    cur_score = num_no_ans
    best_score = cur_score
    best_thresh = 0.0
    qid_list = sorted(na_probs, key=lambda k: na_probs[k])
    for qid in qid_list:
        if qid not in scores:
            continue
        if qid_to_has_ans[qid]:
            diff = scores[qid]
        else:
            diff = -1 if preds[qid] else 0
        cur_score += diff
        if cur_score > best_score:
            best_score = cur_score
            best_thresh = na_probs[qid]
    return 100.0 * best_score / len(scores), best_thresh


def find_all_best_thresh(main_eval: dict, preds: dict, exact_raw: dict, f1_raw: dict, na_probs: dict,
                         qid_to_has_ans: dict) -> None:
    best_exact, exact_thresh = find_best_thresh(preds, exact_raw, na_probs, qid_to_has_ans)
    best_f1, f1_thresh = find_best_thresh(preds, f1_raw, na_probs, qid_to_has_ans)
    main_eval["best_exact"] = best_exact
    main_eval["best_exact_thresh"] = exact_thresh
    main_eval["best_f1"] = best_f1
    main_eval["best_f1_thresh"] = f1_thresh


def evaluate_v2(dataset: list[dict], preds: dict[str, str], na_probs: dict[str, float] | None = None,
                na_prob_thresh: float = 1.0) -> dict:
    """The official v2.0 evaluation (``evaluate-v2.0.py DATA PREDS [--na-prob-file] [-t]``).

    ``na_probs`` maps every question id to the model's no-answer score (we pass the null-odds,
    ``score_null - score_best_span``, as google-research/bert does); without it every question
    counts as answered and no best threshold is searched, as in the official script.
    """
    check_prediction_ids(dataset, preds)
    if na_probs is not None:
        missing = [qid for qid in preds if qid not in na_probs]
        if missing:
            raise PredictionIdError(f"na_probs lacks {len(missing)} question ids, e.g. {missing[:3]}")
    na_given = na_probs is not None
    if not na_given:
        na_probs = {k: 0.0 for k in preds}
    qid_to_has_ans = make_qid_to_has_ans(dataset)
    has_ans_qids = [k for k, v in qid_to_has_ans.items() if v]
    no_ans_qids = [k for k, v in qid_to_has_ans.items() if not v]
    exact_raw, f1_raw = raw_scores_v2(dataset, preds)
    exact_thresh = apply_no_ans_threshold(exact_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    f1_thresh = apply_no_ans_threshold(f1_raw, na_probs, qid_to_has_ans, na_prob_thresh)
    out_eval = make_eval_dict(exact_thresh, f1_thresh)
    if has_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=has_ans_qids), "HasAns")
    if no_ans_qids:
        merge_eval(out_eval, make_eval_dict(exact_thresh, f1_thresh, qid_list=no_ans_qids), "NoAns")
    if na_given:
        find_all_best_thresh(out_eval, preds, exact_raw, f1_raw, na_probs, qid_to_has_ans)
    return dict(out_eval)


# ---------------------------------------------------------------------------------------------
# shared
# ---------------------------------------------------------------------------------------------


def iter_qas(dataset: list[dict]):
    """Every question of a SQuAD ``data`` list, in file order."""
    for article in dataset:
        for paragraph in article["paragraphs"]:
            yield from paragraph["qas"]


def check_prediction_ids(dataset: list[dict], predictions: dict) -> None:
    """Raise :class:`PredictionIdError` unless predictions cover exactly the data's question ids."""
    if not isinstance(predictions, dict):
        raise PredictionIdError(f"predictions must map question id -> answer text, got {type(predictions).__name__}")
    gold_ids = [qa["id"] for qa in iter_qas(dataset)]
    gold_set = set(gold_ids)
    if not gold_ids:
        raise ValueError("the data has no questions")
    missing = [qid for qid in gold_ids if qid not in predictions]
    extra = [qid for qid in predictions if qid not in gold_set]
    problems = []
    if missing:
        problems.append(f"{len(missing)} question ids of the data have no prediction (e.g. {missing[:3]})")
    if extra:
        problems.append(f"{len(extra)} predicted ids are not in the data (e.g. {extra[:3]})")
    if problems:
        raise PredictionIdError("; ".join(problems))
    bad = [qid for qid, text in predictions.items() if not isinstance(text, str)]
    if bad:
        raise PredictionIdError(f"{len(bad)} predictions are not strings (e.g. {bad[:3]})")


def evaluate_squad_predictions(dataset: list[dict], predictions: dict[str, str], *,
                               version_2_with_negative: bool, na_probs: dict[str, float] | None = None,
                               null_score_diff_threshold: float = 0.0) -> dict:
    """Score predictions with the official script of the data's version.

    v2 thresholds ``na_probs`` at ``null_score_diff_threshold``, so that predictions already
    decoded at that threshold score as the official script scores them with
    ``--na-prob-file null_odds.json --na-prob-thresh <threshold>``.
    """
    if version_2_with_negative:
        return evaluate_v2(dataset, predictions, na_probs, na_prob_thresh=null_score_diff_threshold)
    return evaluate_v1(dataset, predictions)


def headline(metrics: dict) -> tuple[float, float]:
    """(EM, F1) from either script's output."""
    if "exact_match" in metrics:
        return metrics["exact_match"], metrics["f1"]
    return metrics["exact"], metrics["f1"]
