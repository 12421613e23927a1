"""The Python API for notebooks and services: load a finished run once, then predict lists of inputs.

    from eval.api import load_predictor

    qa = load_predictor("runs/finetune-squad-span-<hash>")
    qa.predict([{"question": "Who wrote it?", "context": "It was written by Ada in 1843."}])
    # [{"id": "q0", "answer": "Ada", "score": 0.93, "start": 18, "end": 21}]

    news = load_predictor("runs/finetune-textclass-linear-<hash>", fold_pool="max")
    news.predict(["shares rose sharply after ...", {"id": "a7", "text": "the match ended ..."}])
    # [{"id": "input-0", "label": "business", "probabilities": {...}}, ...]
    news.predict_file("new.csv", news.options(text_column="Text"))   # a whole file, read like training's

An entry point, like ``python -m eval``: it looks the run's task up (its train_config.json names
it) and hands the spec to :class:`eval.predict.Predictor`. Each task's ``tasks/<name>/predict.py``
says which inputs it takes and which keys its answers have.
"""

from __future__ import annotations

from pathlib import Path

from eval.inference import read_train_config
from eval.predict import Predictor, make_options


class RunPredictor(Predictor):
    """A :class:`~eval.predict.Predictor` that builds its task's input options by name (``options(...)``)."""

    def options(self, **values):
        """The task's predict options (e.g. textclass's ``text_column``) for :meth:`predict_file`."""
        return make_options(self.part, values)


def load_predictor(run_dir: str | Path, device: str = "auto", nproc: int = 1, **settings) -> RunPredictor:
    """The finished run ``run_dir`` loaded for predictions; ``settings`` are the task's evaluation
    settings by field name (``n_best_size=5``, ``fold_pool="max"``, ``batch_size=128``)."""
    from tasks import get_task

    task = read_train_config(run_dir).get("task")
    if not task:
        raise ValueError(f"{run_dir}: train_config.json names no task")
    spec = get_task(task)
    return RunPredictor(spec, run_dir, spec.eval.config(**settings), device=device, nproc=nproc)
