"""SQuAD answers from start/end logits: n-best spans over all windows of an example.

Pure post-processing (no model, no files): logits and the offset mapping in, answer text out, so
it is tested on synthetic logits. The rules are google-research/bert ``run_squad.py``'s
(``write_predictions``), with answers cut from the original context through the character
offsets as in Hugging Face's ``utils_qa.py``:

- per window, the ``n_best_size`` highest start and end logits are paired; a pair is a candidate
  when both tokens are context tokens (offset not null), ``start <= end``, and the span is at most
  ``max_answer_length`` tokens;
- with ``max_context_only`` a start token counts only in the window where it has the most
  context on both sides (bert's ``_check_is_max_context``), so a token in the overlap of two
  windows is scored where the model saw it best;
- candidates from all windows are ranked by ``start_logit + end_logit``; the n-best list keeps
  the ``n_best_size`` best distinct texts, with softmax probabilities over them and their
  character offsets in the context (``start``, ``end``);
- v2 (``version_2_with_negative``): the null score is the smallest ``start[0] + end[0]`` ([CLS])
  over the windows; the answer is "" when ``null - best_span > null_score_diff_threshold``. That
  difference is returned as ``null_odds`` (the ``--na-prob-file`` of the official v2.0 script).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

# bert's placeholder when no window yields a valid span (e.g. every candidate is too long).
EMPTY_TEXT = "empty"


@dataclass(frozen=True)
class Window:
    """One feature (window) of an example: logits over its real tokens and their char offsets.

    ``offsets[i]`` is ``(char_start, char_end)`` into the context for a context token and None
    for question, special and padding tokens (or an int array ``[T, 2]`` with -1 for those). Logits may be longer than ``offsets`` (padding);
    the extra positions are ignored.
    """

    start_logits: np.ndarray
    end_logits: np.ndarray
    offsets: Sequence[tuple[int, int] | None]


@dataclass(frozen=True)
class ExamplePrediction:
    text: str
    null_odds: float | None  # score_null - score_best_span; None when no window had a null score
    nbest: list[dict] = field(default_factory=list)  # text, probability, start_logit, end_logit, start, end


def _offset_arrays(offsets) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(offsets, np.ndarray):
        if offsets.ndim != 2 or offsets.shape[1] != 2:
            raise ValueError(f"offsets array must be [T, 2], got shape {offsets.shape}")
        return offsets[:, 0].astype(np.int64), offsets[:, 1].astype(np.int64)
    starts = np.full(len(offsets), -1, dtype=np.int64)
    ends = np.full(len(offsets), -1, dtype=np.int64)
    for i, pair in enumerate(offsets):
        if pair is not None:
            starts[i], ends[i] = pair[0], pair[1]
    return starts, ends


def _max_context_flags(starts_per_window: list[np.ndarray], ends_per_window: list[np.ndarray]) -> list[np.ndarray]:
    """For each window, whether each token has its maximum context there (non-context: False).

    A context token is identified across windows by its character offsets. Its score in a window
    is ``min(tokens left, tokens right) + 0.01 * window context length``; the first window with
    the highest score wins, as in bert's ``_check_is_max_context``.
    """
    if len(starts_per_window) == 1:
        return [starts_per_window[0] >= 0]
    width = max(int(ends.max(initial=0)) for ends in ends_per_window) + 1
    keys, scores, windows = [], [], []
    for w, (starts, ends) in enumerate(zip(starts_per_window, ends_per_window)):
        context = starts >= 0
        n = int(context.sum())
        j = np.arange(n)
        keys.append(starts[context] * width + ends[context])
        scores.append(np.minimum(j, n - 1 - j) + 0.01 * n)
        windows.append(np.full(n, w))
    keys, scores, windows = np.concatenate(keys), np.concatenate(scores), np.concatenate(windows)
    # Per key: highest score first, then the earliest window.
    order = np.lexsort((windows, -scores, keys))
    first = np.ones(len(order), dtype=bool)
    first[1:] = keys[order][1:] != keys[order][:-1]
    best_keys, best_windows = keys[order][first], windows[order][first]
    flags = []
    for w, (starts, ends) in enumerate(zip(starts_per_window, ends_per_window)):
        context = starts >= 0
        full = np.zeros(len(starts), dtype=bool)
        where = np.searchsorted(best_keys, starts[context] * width + ends[context])
        full[context] = best_windows[where] == w
        flags.append(full)
    return flags


def _top_indexes(logits: np.ndarray, n: int) -> np.ndarray:
    # Stable sort on the negated logits: ties keep the lower index first, as a sorted() would.
    return np.argsort(-logits, kind="stable")[:n]


def _softmax(scores: list[float]) -> list[float]:
    if not scores:
        return []
    values = np.asarray(scores, dtype=np.float64)
    exp = np.exp(values - values.max())
    return (exp / exp.sum()).tolist()


def decode_example(
    context: str,
    windows: Sequence[Window],
    *,
    n_best_size: int = 20,
    max_answer_length: int = 30,
    version_2_with_negative: bool = False,
    null_score_diff_threshold: float = 0.0,
    max_context_only: bool = True,
) -> ExamplePrediction:
    """Decode one example from all of its windows (see the module docstring for the rules)."""
    if n_best_size < 1:
        raise ValueError(f"n_best_size must be >= 1, got {n_best_size}")
    if max_answer_length < 1:
        raise ValueError(f"max_answer_length must be >= 1, got {max_answer_length}")
    if not windows:
        raise ValueError("an example needs at least one window")

    arrays = []
    for w, window in enumerate(windows):
        length = len(window.offsets)
        start_logits = np.asarray(window.start_logits, dtype=np.float64)
        end_logits = np.asarray(window.end_logits, dtype=np.float64)
        if start_logits.shape[0] < length or end_logits.shape[0] < length:
            raise ValueError(
                f"window {w}: {length} offsets but {start_logits.shape[0]}/{end_logits.shape[0]} logits"
            )
        starts, ends = _offset_arrays(window.offsets)
        if (ends[starts >= 0] > len(context)).any():
            raise ValueError(f"window {w}: offsets point past the end of the context ({len(context)} chars)")
        arrays.append((start_logits[:length], end_logits[:length], starts, ends))

    if max_context_only:
        max_context = _max_context_flags([a[2] for a in arrays], [a[3] for a in arrays])
    else:
        max_context = [starts >= 0 for _, _, starts, _ in arrays]

    # (score, window, start_index, end_index, start_logit, end_logit); windows in order so that
    # equal scores keep the earlier window first after the stable sort.
    prelim: list[tuple[float, int, int, int, float, float]] = []
    null_score = None
    null_logits = (0.0, 0.0)
    for w, (start_logits, end_logits, starts, ends) in enumerate(arrays):
        if len(start_logits) == 0:
            continue
        window_null = start_logits[0] + end_logits[0]
        if null_score is None or window_null < null_score:
            null_score = float(window_null)
            null_logits = (float(start_logits[0]), float(end_logits[0]))
        # All (start, end) pairs of the top-n at once; nonzero() walks them start-major, end-minor,
        # the order of bert's nested loops, so ties keep bert's order after the stable sort.
        s_top = _top_indexes(start_logits, n_best_size)
        e_top = _top_indexes(end_logits, n_best_size)
        s_grid, e_grid = s_top[:, None], e_top[None, :]
        valid = (
            ((starts[s_top] >= 0) & max_context[w][s_top])[:, None]
            & (ends[e_top] >= 0)[None, :]
            & (e_grid >= s_grid)
            & (e_grid - s_grid + 1 <= max_answer_length)
        )
        for i, j in zip(*np.nonzero(valid)):
            s, e = int(s_top[i]), int(e_top[j])
            prelim.append((float(start_logits[s] + end_logits[e]), w, s, e, float(start_logits[s]), float(end_logits[e])))
    if version_2_with_negative and null_score is not None:
        prelim.append((null_score, -1, 0, 0, null_logits[0], null_logits[1]))
    prelim.sort(key=lambda item: item[0], reverse=True)

    nbest: list[dict] = []
    seen: set[str] = set()
    for score, w, s, e, start_logit, end_logit in prelim:
        if len(nbest) >= n_best_size:
            break
        if w < 0:
            text, span = "", (None, None)
        else:
            _, _, starts, ends = arrays[w]
            span = (int(starts[s]), int(ends[e]))
            text = context[span[0] : span[1]]
        if text in seen:
            continue
        seen.add(text)
        nbest.append({"text": text, "start_logit": start_logit, "end_logit": end_logit, "span": span})

    no_span = (None, None)
    if version_2_with_negative and null_score is not None:
        if "" not in seen:
            nbest.append({"text": "", "start_logit": null_logits[0], "end_logit": null_logits[1], "span": no_span})
        # Only the null answer survived: keep a non-null placeholder so a best span exists.
        if len(nbest) == 1:
            nbest.insert(0, {"text": EMPTY_TEXT, "start_logit": 0.0, "end_logit": 0.0, "span": no_span})
    if not nbest:
        nbest.append({"text": EMPTY_TEXT, "start_logit": 0.0, "end_logit": 0.0, "span": no_span})

    probabilities = _softmax([entry["start_logit"] + entry["end_logit"] for entry in nbest])
    # start / end: the answer's character offsets in the context (None for "" and the placeholder).
    nbest = [{"text": entry["text"], "probability": p, "start_logit": entry["start_logit"],
              "end_logit": entry["end_logit"], "start": entry["span"][0], "end": entry["span"][1]}
             for entry, p in zip(nbest, probabilities)]
    best_non_null = next((entry for entry in nbest if entry["text"]), None)

    null_odds = None
    if null_score is not None and best_non_null is not None:
        null_odds = null_score - best_non_null["start_logit"] - best_non_null["end_logit"]
    if version_2_with_negative:
        if best_non_null is None or (null_odds is not None and null_odds > null_score_diff_threshold):
            text = ""
        else:
            text = best_non_null["text"]
    else:
        text = nbest[0]["text"]
    return ExamplePrediction(text=text, null_odds=null_odds, nbest=nbest)


def decode_predictions(
    example_ids: Sequence[str],
    contexts: dict[str, str],
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    offsets: Sequence[Sequence[tuple[int, int] | None]],
    **decode_kwargs,
) -> tuple[dict[str, str], dict[str, float], dict[str, list[dict]]]:
    """Decode every example from per-feature arrays (features of one example may be anywhere).

    ``example_ids[i]``, ``start_logits[i]``, ``end_logits[i]`` and ``offsets[i]`` describe
    feature ``i``; windows of an example are taken in feature order. Returns
    ``(predictions, null_odds, nbest)`` keyed by example id, in first-appearance order.
    """
    if not (len(example_ids) == len(start_logits) == len(end_logits) == len(offsets)):
        raise ValueError(
            f"feature arrays differ in length: {len(example_ids)} ids, {len(start_logits)} start, "
            f"{len(end_logits)} end, {len(offsets)} offsets"
        )
    groups: dict[str, list[int]] = {}
    for i, example_id in enumerate(example_ids):
        groups.setdefault(example_id, []).append(i)
    predictions, null_odds, nbest = {}, {}, {}
    for example_id, indexes in groups.items():
        if example_id not in contexts:
            raise KeyError(f"feature for example {example_id!r}, which is not in the data")
        windows = [Window(start_logits[i], end_logits[i], offsets[i]) for i in indexes]
        result = decode_example(contexts[example_id], windows, **decode_kwargs)
        predictions[example_id] = result.text
        if result.null_odds is not None:
            null_odds[example_id] = result.null_odds
        nbest[example_id] = result.nbest
    return predictions, null_odds, nbest
