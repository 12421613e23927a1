"""Evaluation: score fine-tuned models in the benchmarks' own formats, and report runs.

    python -m eval squad --model runs/train-squad --features runs/squad-dev --data dev-v1.1.json --out runs/eval-squad
    python -m eval gap --model runs/train-gap --features runs/gap-test --data gap-test.tsv --out runs/eval-gap
    python -m eval compare runs/eval-squad-a runs/eval-squad-b --out comparison.md

Modules: :mod:`eval.squad_metrics` (official EM/F1), :mod:`eval.squad_decode` (n-best spans),
:mod:`eval.gap_metrics` (Kaggle log loss, GAP scorer F1 and bias), :mod:`eval.report`,
:mod:`eval.compare`; :mod:`eval.run` ties them to files.
"""
