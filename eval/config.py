"""The configuration objects of the evaluation stage (one per benchmark)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

@dataclass(frozen=True)
class SquadEvalConfig:
    """How SQuAD answers are decoded and scored (the canonical run_squad / utils_qa names).

    ``version_2_with_negative=None`` follows the data: on when any question has
    ``is_impossible`` or the file says version 2.x.
    """

    n_best_size: int = 20
    max_answer_length: int = 30
    version_2_with_negative: bool | None = None
    null_score_diff_threshold: float = 0.0
    max_context_only: bool = True  # bert's _check_is_max_context for overlapping windows
    batch_size: int = 64  # inference only; does not change the result

    def __post_init__(self):
        if self.n_best_size < 1:
            raise ValueError(f"n_best_size must be >= 1, got {self.n_best_size}")
        if self.max_answer_length < 1:
            raise ValueError(f"max_answer_length must be >= 1, got {self.max_answer_length}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def decode_kwargs(self, version_2_with_negative: bool) -> dict:
        """Keyword arguments of :func:`eval.squad_decode.decode_example`."""
        return {
            "n_best_size": self.n_best_size,
            "max_answer_length": self.max_answer_length,
            "version_2_with_negative": version_2_with_negative,
            "null_score_diff_threshold": self.null_score_diff_threshold,
            "max_context_only": self.max_context_only,
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GapEvalConfig:
    """GAP scoring has no decoding knobs; only the inference batch size."""

    batch_size: int = 64

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
