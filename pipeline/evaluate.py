"""``Evaluation``: a fine-tuned model scored on eval features; wraps :mod:`eval.run`.

    luigi --module pipeline Evaluation --task squad --model-dir runs/finetune-squad-span-<hash> \\
        --features-dir runs/features/squad-eval-<hash> --data squad-dev-v1.1 --local-scheduler
    luigi --module pipeline Evaluation --task gap --model-dir runs/finetune-gap-multiply-<hash> \\
        --features-dir runs/features/gap-test-<hash> --input ../shared/data/gap/gap-test.tsv --local-scheduler

The output folder ``<runs_dir>/eval/<task>-<hash>`` holds metrics.json, the benchmark-format
predictions, report.md with its plots, and manifest.json (written last; the folder appears in
one rename). The hash covers the significant parameters (the upstream folders are themselves
content-addressed paths), the data file's sha256 and the eval schema version; batch size and
device only change speed.

``model_dir`` and ``features_dir`` are checked as external inputs. In a DAG, yield
``FineTuned`` and the features task first (dynamic dependencies) and then ``Evaluation`` with
their folders, or subclass ``Evaluation`` with a ``requires()`` that returns them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import luigi

from pipeline.artifacts import artifact_dir, content_hash, significant_params
from pipeline.data import OFFICIAL, DataFile
from pipeline.params import dataclass_parameters
from tasks import all_tasks, get_task, task_names
from prep.artifact import MANIFEST


_COMMON = ("task", "model_dir", "features_dir", "input", "data")


def _eval_parameters() -> dict:
    """One parameter per field of any task's eval config (the first task to declare a name wins)."""
    params: dict = {}
    for spec in all_tasks():
        if spec.eval_config is not None:
            found = dataclass_parameters(spec.eval_config, insignificant=("batch_size",))
            params.update({name: param for name, param in found.items() if name not in params})
    return params


class TrainingOutput(luigi.ExternalTask):
    """A finished training run folder (train writes metrics.json last)."""

    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(str(Path(self.path) / "metrics.json"))


class FeaturesOutput(luigi.ExternalTask):
    """A finished prep output folder (its manifest.json is written last)."""

    path = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(str(Path(self.path) / MANIFEST))


class Evaluation(luigi.Task):
    """A fine-tuned run scored on eval features; the task's eval-config fields are parameters.

    Settings another task does not have are ignored for it (and stay out of its hash).
    """

    task = luigi.ChoiceParameter(choices=task_names())
    model_dir = luigi.Parameter(description="the folder train wrote (FineTuned's run folder)")
    features_dir = luigi.Parameter(description="the eval-split features folder")
    input = luigi.OptionalParameter(default=None, description="the benchmark file the features were built from")
    data = luigi.OptionalChoiceParameter(choices=tuple(OFFICIAL), default=None,
                                         description="an official file by name, fetched by DataFile")
    device = luigi.Parameter(default="auto", significant=False)
    locals().update(_eval_parameters())

    def requires(self):
        required = {"model": TrainingOutput(path=self.model_dir), "features": FeaturesOutput(path=self.features_dir)}
        if self.data:
            required["data"] = DataFile(name=self.data)
        return required

    @property
    def input_path(self) -> Path:
        if (self.input is None) == (self.data is None):
            raise ValueError(f"{self.task_family}: give exactly one of --input FILE or --data NAME")
        return Path(self.input) if self.input else DataFile(name=self.data).path

    def eval_config(self):
        spec = get_task(self.task)
        names = {f.name for f in dataclasses.fields(spec.eval_config)}
        return spec.eval_config(**{name: getattr(self, name) for name in names})

    @property
    def out_dir(self) -> Path:
        from eval.run import SCHEMA_VERSION

        mine = {f.name for f in dataclasses.fields(get_task(self.task).eval_config)}
        params = {k: v for k, v in significant_params(self).items() if k in _COMMON or k in mine}
        payload = {**params, "data_sha256": content_hash(self.input_path), "schema_version": SCHEMA_VERSION}
        return artifact_dir(f"eval/{self.task}", payload)

    def complete(self):
        # Before the data file exists there is no content hash, hence no output path.
        return self.input_path.is_file() and super().complete()

    def output(self):
        return luigi.LocalTarget(str(self.out_dir / MANIFEST))

    def run(self):
        from eval.run import run_evaluation

        self.set_status_message(f"evaluating {self.task} on {self.input_path.name}")
        run_evaluation(self.task, self.model_dir, self.features_dir, self.input_path, self.out_dir,
                       self.eval_config(), self.device)
        self.set_status_message(f"done: {self.out_dir}")
