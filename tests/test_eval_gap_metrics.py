"""GAP scoring on a hand-built set: Kaggle log loss, the GAP scorer's F1 by gender and bias."""

from __future__ import annotations

import csv
import math
from collections import defaultdict

import numpy as np
import pytest

from tasks.gap.formats import (
    GapFormatError,
    read_gap_gold,
    read_submission_csv,
    read_system_tsv,
    write_submission_csv,
    write_system_tsv,
)
from tasks.gap.metrics import (
    GapGold,
    confusion_matrix,
    gap_scorecard,
    gap_scorer_tallies,
    kaggle_log_loss,
    predicted_labels,
    score_gap,
)
from tasks.gap.score import score_gap_file
from tests.conftest import shared_data

pytestmark = pytest.mark.fast

# id, A-coref, B-coref, gender, probabilities (A, B, NEITHER) -> predicted class
HAND = [
    ("g1", True, False, "M", [0.7, 0.2, 0.1]),  # gold A, predicted A: A TP, B TN
    ("g2", False, True, "M", [0.5, 0.3, 0.2]),  # gold B, predicted A: A FP, B FN
    ("g3", False, False, "F", [0.1, 0.1, 0.8]),  # gold NEITHER, predicted NEITHER: TN, TN
    ("g4", True, False, "F", [0.2, 0.1, 0.7]),  # gold A, predicted NEITHER: A FN, B TN
    ("g5", False, True, "F", [0.1, 0.6, 0.3]),  # gold B, predicted B: A TN, B TP
    ("g6", False, False, "M", [0.1, 0.5, 0.4]),  # gold NEITHER, predicted B: A TN, B FP
]
GOLD = [GapGold(i, a, b, g) for i, a, b, g, _ in HAND]
PROBS = np.array([p for *_, p in HAND])


def test_hand_built_set():
    result = score_gap(GOLD, PROBS)
    metrics, card = result["metrics"], result["scorecard"]
    expected_loss = -(math.log(0.7) + math.log(0.3) + math.log(0.8) + math.log(0.2) + math.log(0.6) + math.log(0.4)) / 6
    assert metrics["log_loss"] == pytest.approx(expected_loss, abs=1e-12)
    assert metrics["accuracy"] == pytest.approx(0.5)
    # overall: TP 2 (g1 A, g5 B), FP 2 (g2 A, g6 B), FN 2 (g2 B, g4 A), TN 6
    assert (card["overall"]["tp"], card["overall"]["fp"], card["overall"]["fn"], card["overall"]["tn"]) == (2, 2, 2, 6)
    assert metrics["f1_overall"] == pytest.approx(50.0)
    # masculine g1, g2, g6: TP 1, FP 2, FN 1 -> P 33.3, R 50, F1 40
    assert (card["masculine"]["tp"], card["masculine"]["fp"], card["masculine"]["fn"]) == (1, 2, 1)
    assert metrics["f1_masculine"] == pytest.approx(40.0)
    # feminine g3, g4, g5: TP 1, FP 0, FN 1 -> P 100, R 50, F1 66.7
    assert metrics["f1_feminine"] == pytest.approx(200 / 3)
    assert metrics["bias_f_over_m"] == pytest.approx((200 / 3) / 40.0)
    assert result["confusion_matrix"]["labels"] == ["A", "B", "NEITHER"]
    assert result["confusion_matrix"]["matrix"] == [[1, 0, 1], [1, 1, 0], [0, 1, 1]]


def test_kaggle_log_loss_matches_kaggle_wiki_example():
    # kaggle.com/wiki/MultiClassLogLoss: six public rows, two classes, score 1.881797068998267
    labels = [0, 0, 0, 1, 1, 1]
    probs = [[0.5, 0.5], [0.1, 0.9], [0.01, 0.99], [0.9, 0.1], [0.75, 0.25], [0.001, 0.999]]
    assert kaggle_log_loss(labels, probs) == pytest.approx(1.881797068998267, abs=1e-12)


def test_kaggle_clipping_and_renormalisation():
    # a confident miss costs -log(1e-15 / (1 + 1e-15)), not infinity
    assert kaggle_log_loss([1], [[1.0, 0.0, 0.0]]) == pytest.approx(-math.log(1e-15 / (1 + 1e-15)))
    # rows need not sum to one: [0.4, 0.2, 0.2] is read as [0.5, 0.25, 0.25]
    assert kaggle_log_loss([0], [[0.4, 0.2, 0.2]]) == pytest.approx(math.log(2))
    # clipping comes first: [2, 1, 1] clips to [1 - 1e-15] * 3, i.e. uniform
    assert kaggle_log_loss([0], [[2.0, 1.0, 1.0]]) == pytest.approx(math.log(3))
    with pytest.raises(ValueError):
        kaggle_log_loss([0], [[float("nan"), 0.5, 0.5]])
    with pytest.raises(ValueError):
        kaggle_log_loss([0, 1], [[0.2, 0.3, 0.5]])


def test_bias_undefined_when_a_gender_scores_zero():
    gold = [GapGold("m", True, False, "M"), GapGold("f", True, False, "F")]
    card = gap_scorecard(gap_scorer_tallies(gold, {"m": (True, False), "f": (False, False)}))
    assert card["feminine"]["f1"] == 0.0 and card["bias_f_over_m"] is None  # the scorer prints "-"


def test_ties_claim_no_coreference():
    assert predicted_labels([[1 / 3, 1 / 3, 1 / 3], [0.4, 0.4, 0.2], [0.2, 0.4, 0.4]]).tolist() == [2, 0, 2]
    assert confusion_matrix([0, 2], [2, 2]) == [[0, 0, 1], [0, 0, 0], [0, 0, 1]]


# --- files ----------------------------------------------------------------------------------

HEADER = "ID\tText\tPronoun\tPronoun-offset\tA\tA-offset\tA-coref\tB\tB-offset\tB-coref\tURL"


def _write_gold(path, rows=HAND):
    pronouns = {"M": "his", "F": "Her"}
    lines = [HEADER]
    for example_id, a, b, gender, _ in rows:
        lines.append(f"{example_id}\tSome text.\t{pronouns[gender]}\t0\tAnn\t5\t{str(a).upper()}\tBo\t9\t{str(b).upper()}\thttp://x")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_files_round_trip(tmp_path):
    gold = read_gap_gold(_write_gold(tmp_path / "gold.tsv"))
    assert gold == GOLD
    ids = [row.example_id for row in gold]
    write_submission_csv(tmp_path / "submission.csv", ids, PROBS)
    assert (tmp_path / "submission.csv").read_text().splitlines()[0] == "ID,A,B,NEITHER"
    np.testing.assert_array_equal(read_submission_csv(tmp_path / "submission.csv", ids), PROBS)
    write_system_tsv(tmp_path / "system.tsv", ids, [(True, False), (True, False), (False, False),
                                                    (False, False), (False, True), (False, True)])
    assert (tmp_path / "system.tsv").read_text().splitlines()[1] == "g2\tTRUE\tFALSE"
    from_csv = score_gap_file(tmp_path / "gold.tsv", tmp_path / "submission.csv")
    from_tsv = score_gap_file(tmp_path / "gold.tsv", tmp_path / "system.tsv")
    assert from_csv["f1_overall"] == from_tsv["f1_overall"] == pytest.approx(50.0)
    assert from_csv["bias_f_over_m"] == pytest.approx(from_tsv["bias_f_over_m"])


def test_bad_files_give_clear_errors(tmp_path):
    gold_path = _write_gold(tmp_path / "gold.tsv")
    ids = [row[0] for row in HAND]
    write_submission_csv(tmp_path / "sub.csv", ids[:-1], PROBS[:-1])
    with pytest.raises(GapFormatError, match="1 gold ids have no prediction"):
        read_submission_csv(tmp_path / "sub.csv", ids)
    write_submission_csv(tmp_path / "sub.csv", ids + ["nope"], np.vstack([PROBS, PROBS[:1]]))
    with pytest.raises(GapFormatError, match="not in the gold data"):
        read_submission_csv(tmp_path / "sub.csv", ids)
    text = (tmp_path / "gold.tsv").read_text()
    (tmp_path / "cut.tsv").write_text(text[: len(text) - 30])
    with pytest.raises(GapFormatError, match="line 7: .*truncated or malformed"):
        read_gap_gold(tmp_path / "cut.tsv")
    (tmp_path / "sys.tsv").write_text("g1\tYES\tFALSE\n")
    with pytest.raises(GapFormatError, match="TRUE or FALSE"):
        read_system_tsv(tmp_path / "sys.tsv", ids)
    (tmp_path / "sys.tsv").write_text("g1\tTRUE\tFALSE\ng1\tTRUE\tFALSE\n")
    with pytest.raises(GapFormatError, match="duplicate ID"):
        read_system_tsv(tmp_path / "sys.tsv", ids)
    (tmp_path / "sub.csv").write_text("ID,A,B\n")
    with pytest.raises(GapFormatError, match="header"):
        read_submission_csv(tmp_path / "sub.csv", ids)
    assert read_gap_gold(gold_path)  # the good file still reads


# --- gap_scorer.py, as reference -------------------------------------------------------------
# Its calculate_scores / Scores / make_scorecard logic (Python 3: items() for iteritems()).


def _reference_scorer(gold_path, system):
    pronouns = {"she": "F", "her": "F", "hers": "F", "he": "M", "his": "M", "him": "M"}
    with open(gold_path, newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        gold = {row["ID"]: (row["A-coref"].lower() == "true", row["B-coref"].lower() == "true",
                            pronouns[row["Pronoun"].lower()]) for row in reader}
    counts = defaultdict(lambda: [0, 0, 0, 0])  # tp, fp, tn, fn
    for example_id, (gold_a, gold_b, gender) in gold.items():
        system_a, system_b = system[example_id]
        for key in (None, gender):
            for g, s in ((gold_a, system_a), (gold_b, system_b)):
                if g and s:
                    counts[key][0] += 1
                elif not g and s:
                    counts[key][1] += 1
                elif not g and not s:
                    counts[key][2] += 1
                else:
                    counts[key][3] += 1

    def f1(tp, fp, tn, fn):
        recall = 100.0 * tp / (tp + fn) if tp + fn else 0.0
        precision = 100.0 * tp / (tp + fp) if tp + fp else 0.0
        return 2 * precision * recall / (precision + recall) if precision + recall else 0.0

    scores = {key: f1(*value) for key, value in counts.items()}
    return scores[None], scores["M"], scores["F"], scores["F"] / scores["M"]


def test_matches_gap_scorer_on_real_gold_file():
    path = shared_data("gap/gap-development.tsv")
    gold = read_gap_gold(path)
    rng = np.random.default_rng(0)
    probs = rng.dirichlet([1.0, 1.0, 1.0], size=len(gold))
    # make it better than chance so F1 is not tiny
    for k, row in enumerate(gold):
        if rng.random() < 0.5:
            probs[k] = 0.1
            probs[k, row.label] = 0.8
    result = score_gap(gold, probs)
    predicted = predicted_labels(probs)
    system = {row.example_id: (int(p) == 0, int(p) == 1) for row, p in zip(gold, predicted)}
    overall, masculine, feminine, bias = _reference_scorer(path, system)
    metrics = result["metrics"]
    assert metrics["f1_overall"] == overall
    assert metrics["f1_masculine"] == masculine
    assert metrics["f1_feminine"] == feminine
    assert metrics["bias_f_over_m"] == bias
    assert len(gold) == 2000 and 0 < overall < 100
