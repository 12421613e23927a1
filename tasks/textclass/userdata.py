"""The ``TextClassification`` entry's data step: the user's file(s) read and split.

    luigi --module pipeline TextClassification --data leanings.csv --text-column text \\
        --label-column label --local-scheduler

One file: a seeded split, stratified by label, exact-duplicate texts kept in one split
(:mod:`tasks.textclass.split`). Already split data: ``--validation-data`` and ``--test-data``
(the test file alone: validation is cut from ``--data``). Every split is written as JSON lines
with the columns id, text, text_pair, label, so the three feature tasks read them alike.
The entry's folding flags (``--no-fold``, ``--fold-stride N``, ``--fold-pool mean|max``) are
:class:`TextClassOptions`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tasks.textclass.evaluate import FOLD_POOLS
from tasks.textclass.read import FORMATS, LABEL_TYPES, read_examples
from tasks.textclass.split import check_ratios, check_trainable, file_skips, split_examples, write_splits


@dataclass(frozen=True)
class TextClassSplitConfig:
    data: str = field(metadata={"help": "labelled CSV, TSV, JSON-lines or Parquet file (the training data, or all of it)"})
    text_column: str = field(default="text", metadata={"help": "the text column"})
    label_column: str = field(default="label", metadata={"help": "the label column"})
    text_pair_column: str | None = field(default=None, metadata={"help": "a second text column (sentence pairs)"})
    id_column: str | None = field(default=None, metadata={"help": "an id column (default: row-<line>)"})
    format: str | None = field(default=None, metadata={"help": "csv, tsv, jsonl or parquet (default: from the extension)",
                                                       "choices": FORMATS})
    label_type: str = field(default="auto", metadata={
        "help": "auto (int when every label is an integer, else str), int, str, or float (regression)",
        "choices": LABEL_TYPES})
    validation_data: str | None = field(default=None, metadata={"help": "an already split validation file"})
    test_data: str | None = field(default=None, metadata={"help": "an already split test file"})
    validation_ratio: float = field(default=0.1, metadata={"help": "share of --data for validation (if not given)"})
    test_ratio: float = field(default=0.1, metadata={"help": "share of --data for testing (if not given)"})
    split_seed: int = field(default=13, metadata={"help": "seeds the split"})

    def __post_init__(self):
        if self.label_type not in LABEL_TYPES:
            raise ValueError(f"--label-type must be one of {LABEL_TYPES}, got {self.label_type!r}")
        if self.format is not None and self.format not in FORMATS:
            raise ValueError(f"--format must be one of {FORMATS}, got {self.format!r}")
        check_ratios(self.ratios())

    def ratios(self) -> tuple[float, float, float]:
        """(train, validation, test) shares of ``data``: a split given as a file takes none of it."""
        validation = 0.0 if self.validation_data else self.validation_ratio
        test = 0.0 if self.test_data else self.test_ratio
        return 1.0 - validation - test, validation, test

    def read(self, path: str) -> tuple[list, list, dict]:
        return read_examples(Path(path), self.format, self.text_column, self.label_column, self.text_pair_column,
                             self.id_column, self.label_type)


def write_user_splits(config: TextClassSplitConfig, out_dir: Path) -> dict:
    """Split ``config.data`` (and take the given validation / test files) into ``out_dir``.

    The rows left out of every file read (blank text, missing label, ...) are listed in the
    manifest with their file, line and reason. Data that cannot train a classifier (one class in
    training, a validation / test label training never saw, an empty split) raises
    :class:`UntrainableDataError` before anything is written, so no training starts on it.
    """
    examples, skipped, _ = config.read(config.data)
    skipped = file_skips(skipped, config.data)
    given = {}
    for name, path in (("validation", config.validation_data), ("test", config.test_data)):
        if path:
            given[name], left_out, _ = config.read(path)
            skipped += file_skips(left_out, path)
    ratios = config.ratios()
    regression = config.label_type == "float"
    splits = split_examples(examples, ratios=ratios, seed=config.split_seed, stratify=not regression)
    splits.update(given)
    sources = {"train": config.data, "validation": config.validation_data or config.data,
               "test": config.test_data or config.data}
    check_trainable(splits, sources, config.label_column, regression=regression, skipped=len(skipped))
    manifest = write_splits(splits, out_dir, None, ratios=ratios, seed=config.split_seed,
                            input_path=config.data, stratified=not regression, skipped=skipped)
    return manifest


def split_prep_values(config: TextClassSplitConfig) -> dict:
    """How the features tasks read a split file (its columns are fixed by write_splits)."""
    return {"text_column": "text", "label_column": "label", "id_column": "id", "format": "jsonl",
            "text_pair_column": "text_pair" if config.text_pair_column else None,
            "label_type": "float" if config.label_type == "float" else "auto"}


@dataclass(frozen=True)
class TextClassOptions:
    """The entry's folding flags. Unset, [TextclassFeatures] and [TextclassEvaluation] in luigi.cfg decide."""

    no_fold: bool = field(default=False, metadata={
        "flag": True, "help": "truncate each text to its first window instead of folding it into several"})
    fold_stride: int | None = field(default=None, metadata={
        "help": "overlap in tokens between a text's consecutive windows (default 0: plain folding)"})
    fold_pool: str | None = field(default=None, metadata={
        "help": "how a text's window logits combine at evaluation: mean (default) or max", "choices": FOLD_POOLS})

    def __post_init__(self):
        if self.fold_stride is not None and self.fold_stride < 0:
            raise ValueError(f"--fold-stride must be >= 0, got {self.fold_stride}")
        if self.no_fold and self.fold_stride:
            raise ValueError("--fold-stride needs folding: drop --no-fold, or the stride")


def option_values(options: TextClassOptions) -> tuple[dict, dict]:
    """(prep values, evaluation values) of the set flags."""
    prep = {"fold": False} if options.no_fold else {}
    if options.fold_stride is not None:
        prep["fold_stride"] = options.fold_stride
    return prep, ({"fold_pool": options.fold_pool} if options.fold_pool is not None else {})
