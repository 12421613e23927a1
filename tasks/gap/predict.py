"""GAP predictions on new rows: a GAP TSV without the ``A-coref`` / ``B-coref`` columns (Kaggle's test layout).

    python -m eval predict gap --model runs/finetune-gap-multiply-<hash> --data test_stage_1.tsv --out runs/predict-gap

The rows are prepared as the run's features were (its ``max_seq_length`` window) and scored by
the evaluation's own :func:`tasks.gap.evaluate.gap_probabilities` and per-row averaging, so a
labelled file with its labels removed gets exactly evaluation's ``submission.csv``. Outputs:
``submission.csv`` (Kaggle: ID,A,B,NEITHER, one row per ID of the file in file order; a row prep
skipped gets the uniform distribution, as in evaluation, and is reported) and
``gap_predictions.tsv`` (the GAP scorer's ID / A-coref / B-coref).

The Python API takes ``{"text", "pronoun", "pronoun_offset", "a", "a_offset", "b", "b_offset",
"id"?}`` dicts (offsets in characters) and returns ``{"id", "A", "B", "NEITHER", "answer"}``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from eval.inference import ordered_table
from tasks.gap.evaluate import SUBMISSION_FILE, SYSTEM_FILE, UNIFORM, example_probabilities, gap_probabilities
from tasks.gap.formats import write_submission_csv, write_system_tsv
from tasks.gap.metrics import LABELS, coref_decisions, predicted_labels
from tasks.gap.prep import GapPrepConfig
from tasks.gap.read import read_gap
from tasks.spec import PredictContext, PredictOutcome

INPUT_COLUMNS = ("ID", "Text", "Pronoun", "Pronoun-offset", "A", "A-offset", "B", "B-offset", "URL")
_API_KEYS = ("id", "text", "pronoun", "pronoun_offset", "a", "a_offset", "b", "b_offset", "url")


def prep_config(train_config: dict, features_config: dict, options=None) -> GapPrepConfig:
    """The run's window: its features' ``max_seq_length`` (else train_config.json's)."""
    length = features_config.get("max_seq_length") or train_config.get("max_seq_length")
    return GapPrepConfig(max_seq_length=length) if length else GapPrepConfig()


def _line(where: str) -> int:
    found = re.search(r"line (\d+)", where or "")
    return int(found.group(1)) if found else 0


def row_ids(path: Path) -> list[str]:
    """Every ID of the file in file order, each once (a repeated or empty ID is no row of its own)."""
    result = read_gap(path, 1 << 30, labelled=False)
    rows = [(ex.line, ex.example_id) for chunk in result.chunks for ex in chunk]
    rows += [(_line(s["where"]), s["example_id"]) for s in result.skipped if s.get("example_id")]
    return list(dict.fromkeys(example_id for _, example_id in sorted(rows)))


def predict(context: PredictContext) -> PredictOutcome:
    """A distribution over A, B, NEITHER for every row of the file."""
    ids = row_ids(context.data_path)
    skipped = context.skipped
    by_example: dict = {}
    if context.features.num_rows:
        table = ordered_table(context.features)
        probs = gap_probabilities(context.model, table, context.config.batch_size, device=context.device,
                                  pad_id=context.pad_id, progress=context.progress)
        by_example = example_probabilities(table.column("example_id").to_pylist(), probs)
    probs = np.stack([by_example.get(example_id, UNIFORM) for example_id in ids]) if ids else np.zeros((0, 3))
    labels = predicted_labels(probs) if ids else []
    records = []
    for example_id, row, label in zip(ids, probs, labels):
        record = {"id": example_id, **{name: float(p) for name, p in zip(LABELS, row)}}
        record["answer"] = None if example_id in skipped else LABELS[int(label)]
        if example_id in skipped:
            record["skipped"] = skipped[example_id]
        records.append(record)

    def write_files(folder: Path) -> None:
        write_submission_csv(folder / SUBMISSION_FILE, ids, probs)
        write_system_tsv(folder / SYSTEM_FILE, ids, coref_decisions(labels))

    counts = {"rows": len(ids), "features": context.features.num_rows,
              "rows_skipped": sum(1 for example_id in ids if example_id in skipped)}
    return PredictOutcome(records=records, write_files=write_files, counts=counts)


def _cell(value) -> str:
    # The GAP TSV has no quoting: a tab or line break inside a field becomes a space (offsets keep).
    return re.sub(r"[\t\r\n]", " ", str(value))


def write_inputs(inputs: list, folder: Path, train_config: dict | None = None) -> tuple[Path, None]:
    """The rows as a GAP TSV in Kaggle's test layout (ids ``input-<i>`` by default)."""
    lines = ["\t".join(INPUT_COLUMNS)]
    for i, item in enumerate(inputs):
        missing = [key for key in _API_KEYS[1:-1] if not isinstance(item, dict) or key not in item]
        if missing:
            raise ValueError(f"input {i}: missing {', '.join(missing)}; a GAP row has {', '.join(_API_KEYS)} "
                             "(id and url optional)")
        values = {**item, "id": item.get("id", f"input-{i}"), "url": item.get("url", "")}
        lines.append("\t".join(_cell(values[key]) for key in _API_KEYS))
    path = Path(folder) / "rows.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, None
