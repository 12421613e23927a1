"""Text classification splits: deterministic, stratified (classification) or ratio-kept (regression),
duplicates never cross splits, a test label unseen in training is recorded and warned."""

from __future__ import annotations

import random

import pytest

from tests.conftest import shared_data
from tasks.textclass.read import TextExample, read_examples
from tasks.textclass.split import (UnseenLabelWarning, UntrainableDataError, check_trainable, duplicate_key,
                                 split_counts, split_examples, write_splits)
from tests.test_textclass_prep import BBC, BBC_COLUMNS

pytestmark = pytest.mark.fast

def _labelled(counts: dict[str, int]) -> list[TextExample]:
    examples, line = [], 2
    for label, n in counts.items():
        for i in range(n):
            examples.append(TextExample(f"row-{line}", f"{label} text {i}", None, label, line))
            line += 1
    random.Random(0).shuffle(examples)
    return examples


def test_split_is_deterministic_and_stratified():
    examples = _labelled({"a": 53, "b": 31, "c": 16})
    ratios = (0.7, 0.2, 0.1)
    first, again, other = (split_examples(examples, ratios, seed=s) for s in (5, 5, 6))
    assert first == again and first != other
    assert sorted(ex.line for part in first.values() for ex in part) == sorted(ex.line for ex in examples)
    counts = split_counts(first)
    for label, total in {"a": 53, "b": 31, "c": 16}.items():
        for name, ratio in zip(("train", "validation", "test"), ratios):
            assert abs(counts[name]["labels"][label] - ratio * total) <= 1, (name, label)
    assert [ex.line for ex in first["test"]] == sorted(ex.line for ex in first["test"])


def test_split_validates_ratios():
    for ratios in [(0.8, 0.2), (0.0, 0.5, 0.5), (0.5, 0.3, 0.3), (1.2, -0.1, -0.1)]:
        with pytest.raises(ValueError, match="ratios"):
            split_examples(_labelled({"a": 10}), ratios)


def test_regression_split_is_not_stratified_but_keeps_ratios():
    examples = [TextExample(f"row-{i}", f"text {i}", None, float(i), i) for i in range(2, 102)]
    splits = split_examples(examples, (0.8, 0.1, 0.1), seed=1)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [80, 10, 10]
    assert split_counts(splits)["train"]["labels"] == {}


def test_bbc_duplicates_never_cross_splits(tmp_path):
    examples, _, info = read_examples(shared_data(BBC), **BBC_COLUMNS)
    splits = split_examples(examples, seed=13)
    keys = {name: {duplicate_key(ex) for ex in part} for name, part in splits.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]
    assert sum(len(part) for part in splits.values()) == 1490
    manifest = write_splits(splits, tmp_path / "splits", info["labels"], seed=13, input_path=shared_data(BBC))
    assert manifest["duplicate_groups"] == 50 and manifest["unseen_labels"] == {}
    assert manifest["input"]["sha256"] == "fa917b1dfe369a2e7c688e1fbe42a6f8b92f4c7e55559d325d34d6166b1af356"
    assert manifest["labels"] == info["labels"]
    for name, part in splits.items():
        assert manifest["counts"][name]["texts"] == len(part)
        assert abs(len(part) - 1490 * dict(train=0.8, validation=0.1, test=0.1)[name]) <= 5
    back, _, back_info = read_examples(tmp_path / "splits" / "test.jsonl", id_column="id")
    assert [(ex.example_id, ex.text, ex.label) for ex in back] == [(ex.example_id, ex.text, ex.label)
                                                                   for ex in splits["test"]]


def test_a_test_label_unseen_in_training_is_recorded_and_warned(tmp_path):
    splits = {"train": _labelled({"a": 4}), "validation": _labelled({"a": 1}), "test": _labelled({"a": 1, "z": 1})}
    with pytest.warns(UnseenLabelWarning, match="test split has label"):
        manifest = write_splits(splits, tmp_path / "splits", None)
    assert manifest["unseen_labels"] == {"test": ["z"]} and manifest["labels"] == ["a", "z"]
    assert manifest["counts"]["test"] == {"texts": 2, "labels": {"a": 1, "z": 1}}
    assert len((tmp_path / "splits" / "test.jsonl").read_text().splitlines()) == 2


SOURCES = {"train": "data.csv", "validation": "data.csv", "test": "data.csv"}


def test_one_class_in_training_is_refused_naming_file_column_and_class():
    splits = split_examples(_labelled({"sport": 40}))
    with pytest.raises(UntrainableDataError) as caught:
        check_trainable(splits, SOURCES, "Category")
    assert str(caught.value) == ("data.csv: column 'Category': the training split has one class only, 'sport' "
                                 "(32 texts); a classifier needs two at least (or --label-type float for a numeric "
                                 "target)")
    check_trainable(split_examples(_labelled({"sport": 40, "tech": 3})), SOURCES, "Category")


def test_a_label_training_never_saw_is_refused():
    splits = {"train": _labelled({"a": 4, "b": 4}), "validation": _labelled({"a": 1, "b": 1}),
              "test": _labelled({"a": 1, "z": 2})}
    sources = {**SOURCES, "test": "test.csv"}
    with pytest.raises(UntrainableDataError, match=r"^test.csv: column 'label': the test split has label\(s\) the "
                                                   r"training split never has, 'z' \(2 texts\) \(training: 'a', 'b'\)$"):
        check_trainable(splits, sources, "label")


def test_too_few_rows_for_a_split_are_refused():
    # 5 texts per label, 80/10/10: 4 + 1 + 0 per label, so the test split gets none.
    splits = split_examples(_labelled({"a": 5, "b": 5}))
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [8, 2, 0]
    with pytest.raises(UntrainableDataError, match=r"^data.csv: columns 'label' and the text: 10 usable rows, 2 rows "
                                                   r"left out leave the test split without a text; "):
        check_trainable(splits, SOURCES, "label", skipped=2)
    regression = {"train": [TextExample("row-2", "t", None, 1.0, 2)], "validation": [], "test": []}
    with pytest.raises(UntrainableDataError, match="the validation split without a text"):
        check_trainable(regression, SOURCES, "score", regression=True)
    regression["validation"] = regression["test"] = regression["train"]
    check_trainable(regression, SOURCES, "score", regression=True)  # a single target value is no classifier's problem
