"""Splitting one labelled file into train / validation / test, with no text in two splits.

    python -m tasks.textclass.split bbc-news/train.csv runs/bbc-splits --text-column Text --label-column Category

Deterministic for a seed; stratified by label (classification), so each split keeps the file's
label shares; exact duplicates (same text and text pair after stripping) form one group that
goes to one split, so a duplicated article never sits in train and in test at once (the BBC
file has 50 such extra copies: 1,440 distinct texts of 1,490). The written files are JSON lines
(``id``, ``text``, ``text_pair``, ``label``) that ``python -m prep textclass`` reads with
``--id-column id --labels '<the manifest's labels>'``.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import warnings
from collections import Counter, defaultdict
from pathlib import Path

from prep.artifact import atomic_output_dir, sha256_file, write_json_atomic
from prep.folders import MANIFEST
from tasks.textclass.read import (FORMATS, LABEL_TYPES, TextClassFormatError, TextExample, label_set, read_examples,
                                resolve_label_type)

SPLITS = ("train", "validation", "test")


class UnseenLabelWarning(UserWarning):
    """A validation or test label that no training text has: the model can never predict it."""


class UntrainableDataError(ValueError):
    """The data cannot train and judge a classifier: one class in training, a validation / test label
    that training never saw, or a split left without a text. Raised before anything is written."""


def check_ratios(ratios) -> tuple[float, float, float]:
    """``(train, validation, test)`` shares summing to 1: train positive, validation / test positive or 0
    (0: that split comes from a file of its own)."""
    ratios = tuple(float(r) for r in ratios)
    if len(ratios) != len(SPLITS):
        raise ValueError(f"ratios must be {len(SPLITS)} numbers (train, validation, test), got {ratios}")
    if any(not math.isfinite(r) or r < 0 for r in ratios) or ratios[0] <= 0:
        raise ValueError(f"ratios must be positive (validation / test may be 0), got {ratios}")
    if not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"ratios must sum to 1, got {ratios} (sum {sum(ratios):g})")
    return ratios


def duplicate_key(example: TextExample) -> tuple[str, str]:
    """What makes two examples the same text: text and text pair, stripped."""
    return example.text.strip(), (example.text_pair or "").strip()


def group_duplicates(examples: list[TextExample]) -> list[list[TextExample]]:
    """The examples grouped by :func:`duplicate_key`, groups in order of first appearance."""
    groups: dict[tuple[str, str], list[TextExample]] = {}
    for example in examples:
        groups.setdefault(duplicate_key(example), []).append(example)
    return list(groups.values())


def _targets(total: int, ratios: tuple[float, ...]) -> list[int]:
    """``total`` shared by ``ratios`` in whole examples (largest remainder, ties to the earlier split)."""
    exact = [total * r for r in ratios]
    counts = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(ratios)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in by_remainder[:total - sum(counts)]:
        counts[i] += 1
    return counts


def _deal(groups: list[list[TextExample]], ratios: tuple[float, ...], rng: random.Random) -> list[list[TextExample]]:
    """Shuffle ``groups`` and give each to the split furthest below its target (in examples)."""
    groups = list(groups)
    rng.shuffle(groups)
    targets = _targets(sum(len(g) for g in groups), ratios)
    taken = [0] * len(ratios)
    dealt: list[list[TextExample]] = [[] for _ in ratios]
    for group in groups:
        # The largest shortfall wins; a duplicate group may overshoot its split by its extra copies.
        split = max((i for i, share in enumerate(ratios) if share > 0), key=lambda i: (targets[i] - taken[i], -i))
        dealt[split].extend(group)
        taken[split] += len(group)
    return dealt


def split_examples(examples: list[TextExample], ratios=(0.8, 0.1, 0.1), seed: int = 13,
                   stratify: bool = True) -> dict[str, list[TextExample]]:
    """``{"train": [...], "validation": [...], "test": [...]}``, each in file order.

    Duplicate texts stay together; with ``stratify`` (classification only: float labels are
    regression and are never stratified) each label is shared out on its own, so every split's
    label counts are within one text of ``ratios`` (more only where a duplicate group overshoots).
    A duplicate group whose copies disagree on the label goes with its first copy's label.
    """
    ratios = check_ratios(ratios)
    rng = random.Random(seed)
    groups = group_duplicates(examples)
    regression = any(isinstance(example.label, float) for example in examples)
    if stratify and not regression:
        by_label: dict[str, list[list[TextExample]]] = defaultdict(list)
        for group in groups:
            by_label[group[0].label].append(group)
        dealt = [_deal(by_label[label], ratios, rng) for label in sorted(by_label)]
        parts = [[ex for per_label in dealt for ex in per_label[i]] for i in range(len(SPLITS))]
    else:
        parts = _deal(groups, ratios, rng)
    return {name: sorted(part, key=lambda ex: ex.line) for name, part in zip(SPLITS, parts)}


def split_counts(splits: dict[str, list[TextExample]]) -> dict[str, dict]:
    """Per split: ``{"texts": n, "labels": {label: n}}`` (labels sorted; empty for regression)."""
    counts = {}
    for name, examples in splits.items():
        labels = Counter(ex.label for ex in examples if not isinstance(ex.label, float))
        counts[name] = {"texts": len(examples), "labels": dict(sorted(labels.items()))}
    return counts


def unseen_labels(splits: dict[str, list[TextExample]]) -> dict[str, list[str]]:
    """Validation / test labels that no training text has, per split (only splits that have some)."""
    seen = {ex.label for ex in splits.get("train", [])}
    found = {}
    for name in SPLITS[1:]:
        missing = sorted({ex.label for ex in splits.get(name, []) if not isinstance(ex.label, float)} - seen)
        if missing:
            found[name] = missing
    return found


def _labels_found(examples: list[TextExample]) -> str:
    counts = Counter(ex.label for ex in examples)
    return ", ".join(f"{label!r} ({n} text{'s' if n != 1 else ''})" for label, n in sorted(counts.items()))


def check_trainable(splits: dict[str, list[TextExample]], sources: dict[str, str], label_column: str, *,
                    regression: bool = False, skipped: int = 0) -> None:
    """Raise :class:`UntrainableDataError` (one line: the file, the column, what was found) unless every
    split has a text, the training split has two classes at least and validation / test hold no
    label training lacks (classification only).

    ``sources`` names the file each split came from; ``skipped``: the rows the read left out, for
    the message about too few rows.
    """
    train = splits.get("train", [])
    seen = {ex.label for ex in train}
    if not regression and len(seen) == 1:
        raise UntrainableDataError(
            f"{sources['train']}: column {label_column!r}: the training split has one class only, {_labels_found(train)}; "
            "a classifier needs two at least (or --label-type float for a numeric target)")
    for name in SPLITS:
        if not splits.get(name):
            usable = sum(len(splits.get(part, [])) for part in SPLITS if sources.get(part) == sources[name])
            left_out = f", {skipped} rows left out" if skipped else ""
            raise UntrainableDataError(
                f"{sources[name]}: columns {label_column!r} and the text: {usable} usable rows{left_out} leave the {name} "
                "split without a text; give more rows, or the split as a file of its own")
    if regression:
        return
    for name in SPLITS[1:]:
        unseen = [ex for ex in splits.get(name, []) if ex.label not in seen]
        if unseen:
            raise UntrainableDataError(
                f"{sources[name]}: column {label_column!r}: the {name} split has label(s) the training split never has, "
                f"{_labels_found(unseen)} (training: {', '.join(map(repr, sorted(seen)))})")


def file_skips(skipped: list[dict], path: str | Path) -> list[dict]:
    """``read_examples``' skip records of file ``path``, each naming the file (a split reads up to three)."""
    return [{"file": str(path), **record} for record in skipped]


def write_splits(splits: dict[str, list[TextExample]], out_dir: str | Path, labels: list[str] | None, *,
                 ratios=(0.8, 0.1, 0.1), seed: int = 13, input_path: str | Path | None = None,
                 stratified: bool = True, skipped: list[dict] | None = None) -> dict:
    """Write ``<split>.jsonl`` files and ``manifest.json`` into ``out_dir`` atomically; returns the manifest.

    ``labels`` is the ordered label set (``[]`` for regression; None: sorted from all splits'
    labels, integers numerically). A validation / test label that training never saw is recorded
    in the manifest's ``unseen_labels`` and raised as an :class:`UnseenLabelWarning`.
    ``skipped``: the rows left out when the input file(s) were read (:func:`file_skips` records),
    listed in the manifest with their file, line and reason, and counted (``rows_skipped``,
    ``skip_reasons``).
    """
    skipped = list(skipped or [])
    every = [ex for name in SPLITS for ex in splits.get(name, [])]
    regression = any(isinstance(ex.label, float) for ex in every)
    label_type = "float" if regression else resolve_label_type("auto", [ex.label for ex in every])
    if labels is None:
        labels = label_set([ex.label for ex in every], label_type)
    unseen = unseen_labels(splits)
    for name, missing in unseen.items():
        warnings.warn(f"{name} split has label(s) {', '.join(missing)} that no training text has", UnseenLabelWarning,
                      stacklevel=2)
    groups = group_duplicates(every)
    manifest = {
        "kind": "splits",  # prep reads the label order from here when it preps one of these files
        "splits": {name: f"{name}.jsonl" for name in SPLITS},
        "counts": split_counts({name: splits.get(name, []) for name in SPLITS}),
        "ratios": list(check_ratios(ratios)),
        "seed": seed,
        "stratified": stratified and not regression,
        "labels": list(labels),
        "label_type": label_type,
        "unseen_labels": unseen,
        "duplicate_groups": sum(len(g) > 1 for g in groups),
        "duplicate_texts": sum(len(g) - 1 for g in groups),
        "rows_skipped": len(skipped),
        "skip_reasons": dict(Counter(record["reason"] for record in skipped)),
        "skipped": skipped,
        "input": None if input_path is None else {"path": str(Path(input_path).resolve()),
                                                   "sha256": sha256_file(input_path)},
    }
    with atomic_output_dir(out_dir) as tmp:
        for name in SPLITS:
            with open(tmp / f"{name}.jsonl", "w", encoding="utf-8") as handle:
                for ex in splits.get(name, []):
                    record = {"id": ex.example_id, "text": ex.text, "text_pair": ex.text_pair, "label": ex.label}
                    handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        write_json_atomic(tmp / MANIFEST, manifest)
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tasks.textclass.split", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", type=Path, help="labelled CSV, TSV, JSON-lines or Parquet file")
    parser.add_argument("out_dir", type=Path, help="output folder: train/validation/test.jsonl + manifest.json")
    parser.add_argument("--text-column", default="text")
    parser.add_argument("--label-column", default="label")
    parser.add_argument("--text-pair-column", default=None)
    parser.add_argument("--id-column", default=None, help="default: row-<line>")
    parser.add_argument("--format", choices=FORMATS, default=None, help="default: from the extension")
    parser.add_argument("--label-type", choices=LABEL_TYPES, default="auto", help="float: regression (not stratified)")
    parser.add_argument("--ratios", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VALIDATION", "TEST"))
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--no-stratify", dest="stratify", action="store_false")
    args = parser.parse_args(argv)
    try:
        check_ratios(args.ratios)
    except ValueError as err:
        parser.error(str(err))
    try:
        examples, skipped, info = read_examples(args.input, args.format, args.text_column, args.label_column,
                                                args.text_pair_column, args.id_column, args.label_type)
    except (TextClassFormatError, FileNotFoundError) as err:
        print(f"textclass split: error: {err}", file=sys.stderr)
        return 1
    splits = split_examples(examples, args.ratios, args.seed, args.stratify)
    manifest = write_splits(splits, args.out_dir, info["labels"], ratios=args.ratios, seed=args.seed,
                            input_path=args.input, stratified=args.stratify, skipped=file_skips(skipped, args.input))
    sizes = ", ".join(f"{name} {c['texts']}" for name, c in manifest["counts"].items())
    print(f"{sizes} texts ({len(skipped)} rows skipped, listed in the manifest; {manifest['duplicate_groups']} "
          f"duplicate groups kept "
          f"together) -> {args.out_dir}; prep each with --id-column id --labels '{json.dumps(manifest['labels'])}'")
    return 0


if __name__ == "__main__":
    sys.exit(main())
