"""Evaluation: score fine-tuned models in the benchmarks' own formats, and report runs.

    python -m eval squad --model runs/train-squad --features runs/squad-dev --data dev-v1.1.json --out runs/eval-squad
    python -m eval gap --model runs/train-gap --features runs/gap-test --data gap-test.tsv --out runs/eval-gap
    python -m eval compare runs/eval-squad-a runs/eval-squad-b --out comparison.md

The engine is task-agnostic: :mod:`eval.run` (checks, the task's ``evaluate``, atomic output),
:mod:`eval.inference`, :mod:`eval.report`, :mod:`eval.compare`, :mod:`eval.aggregate`.
Scoring, decoding and report sections live with each task
(``tasks/<name>/``).
"""
