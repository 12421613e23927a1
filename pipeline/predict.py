"""``Predict``: a finished run's predictions on a new file (inputs without answers or labels); wraps :mod:`eval.predict`.

    luigi --module pipeline Predict --task textclass --run-dir runs/finetune-textclass-linear-<hash> \\
        --data new.csv --text-column Text --id-column ArticleId --local-scheduler
    luigi --module pipeline Predict --task squad --run-dir RUN_DIR --data questions.json --n-best-size 5

The task's evaluation settings (decoding, pooling) are its ``<Task>Evaluation``'s (its luigi.cfg
section, then the flags given here, as ``Evaluation --task`` takes them); the flags that say how to
read the file are the task's predict options (textclass's ``--text-column`` ...). The output
``<runs_dir>/predict/<task>-<hash>`` (prep.folders.PredictFolder: the task's files, summary.json,
manifest.json last) is named after the significant settings, the run folder's name and its
head's sha256, and the data file's sha256: run again, it is found done; a new file, a retrained
run or another setting gives a new folder. Batch size, device and prep processes only change speed.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import Artifact, FolderOutput, SchedulerProgress, content_hash, significant_params
from pipeline.evaluate import SPEED_ONLY, _given_fields, given_eval_values
from pipeline.params import dataclass_parameters
from prep.folders import PredictFolder, RunFolder
from tasks import all_tasks, get_task


def _option_fields() -> dict[str, luigi.Parameter]:
    """Every task's predict options as optional parameters (None: the task's default)."""
    params: dict[str, luigi.Parameter] = {}
    for spec in all_tasks():
        options = spec.eval.predict.options if spec.eval.predict is not None else None
        if options is not None:
            found = dataclass_parameters(options, optional=True)
            params.update({name: param for name, param in found.items() if name not in params})
    return params


_EVAL_FIELDS = _given_fields()
_OPTION_FIELDS = _option_fields()


class Predict(Artifact):
    """Task ``--task``'s run ``--run-dir`` applied to the file ``--data``."""

    task = luigi.ChoiceParameter(choices=tuple(spec.name for spec in all_tasks() if spec.eval.predict is not None))
    run_dir = luigi.Parameter(description="a finished run folder (what <Task>FineTuned or python -m train wrote)")
    data = luigi.Parameter(description="the file of new inputs, without answers or labels")
    locals().update(_EVAL_FIELDS)
    locals().update(_OPTION_FIELDS)
    device = luigi.Parameter(default="auto", significant=False)
    nproc = luigi.IntParameter(default=1, significant=False, description="prep processes")

    done_file = PredictFolder.MANIFEST

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.eval_values(), self.option_values()  # a setting the task does not have is an error here

    def eval_values(self) -> dict:
        return given_eval_values(self.task, {name: getattr(self, name) for name in _EVAL_FIELDS}, self.task_family)

    def option_values(self) -> dict:
        """The predict options given, by field name; one the task does not have is an error."""
        options = get_task(self.task).eval.predict.options
        own = set(options.__dataclass_fields__) if options is not None else set()
        given = {name: getattr(self, name) for name in _OPTION_FIELDS if getattr(self, name) is not None}
        foreign = sorted(set(given) - own)
        if foreign:
            raise ValueError(f"{self.task_family}: task {self.task} has no input option {', '.join(foreign)} "
                             f"(its own: {', '.join(sorted(own)) or 'none'})")
        return given

    def requires(self):
        return FolderOutput(path=self.run_dir, marker=RunFolder.METRICS)

    def folder_kind(self) -> str:
        return f"predict/{self.task}"

    def pending_payload(self) -> dict:
        common = {name: value for name, value in significant_params(self).items() if name in ("task", "run_dir", "data")}
        own = {name: value for name, value in self.eval_values().items() if name not in SPEED_ONLY}
        return {**common, **own, **self.option_values()}

    def name_payload(self) -> dict | None:
        from eval.predict import SCHEMA_VERSION

        run, data = RunFolder(self.run_dir), Path(self.data)
        if not data.is_file() or not run.head.is_file():
            return None
        return {**self.pending_payload(), "run": run.path.resolve().name, "head_sha256": content_hash(run.head),
                "data_sha256": content_hash(data), "schema_version": SCHEMA_VERSION}

    def run(self):
        from eval.predict import make_options, run_prediction

        spec = get_task(self.task)
        out_dir = self.ready_dir()
        self.set_status_message(f"predicting {self.task} on {Path(self.data).name}")
        run_prediction(spec, self.run_dir, self.data, out_dir, spec.eval.config(**self.eval_values()),
                       make_options(spec.eval.predict, self.option_values()), device=self.device, nproc=self.nproc,
                       prep_progress=SchedulerProgress(self, "prep"), progress=SchedulerProgress(self, "inference"))
        self.set_status_message(f"done: {out_dir}")
