"""Entry tasks for tasks whose data the user brings (``TaskSpec.plan``: a ``UserDataPlan``), one generated per task.

    luigi --module pipeline TextClassification --data leanings.csv --text-column text \
        --label-column label --local-scheduler

The entry's parameters are the task's split-config fields (files, columns, split ratios, seed),
its further options if the plan has them (textclass: ``--no-fold``, ``--fold-stride``,
``--fold-pool``), plus ``--model-dir``, ``--nproc``, ``--world-size``. It requires one ``<Task>Evaluation`` on the test
split of a model fine-tuned on the train split, chosen on the validation split: ``Splits`` ->
``<Task>Features`` x 3 -> ``<Task>FineTuned`` -> ``<Task>Evaluation``, every knob from luigi.cfg
sections or ``--Task-param`` flags as in FullRun. Its output is a run summary like FullRun's,
named after every artifact folder of the run, so a second run with the same file and settings
does no work, and a new file or column re-runs what depends on it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import luigi

from pipeline.artifacts import Artifact, check_chain, upstream_dir
from pipeline.evaluate import EVALUATIONS, EvaluationTask
from pipeline.params import ENCODER_HELP, EncoderDirParameter, dataclass_parameters
from pipeline.splits import Splits
from pipeline.summary import SUMMARY, write_run_summary
from prep.pool import available_cpus
from tasks import get_task


class UserDataRun(Artifact):
    """Base of the generated entry tasks (pipeline.generated; ``task`` is fixed by each)."""

    task = ""
    model_dir = EncoderDirParameter(default=None, description=ENCODER_HELP)
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False,
                               description="prep processes (capped below the CPU count)")
    world_size = luigi.IntParameter(default=1, significant=False, description="training processes (GPUs)")

    done_file = SUMMARY

    @classmethod
    def class_attributes(cls, spec) -> dict:
        """What task ``spec``'s entry sets: its split config's fields and the plan's options as parameters."""
        plan = spec.plan
        return {**dataclass_parameters(plan.split_config),
                **(dataclass_parameters(plan.options) if plan.options else {}), "task": spec.name}

    def check_parameters(self) -> None:
        # The whole chain is made here, so bad split ratios, a refused folding flag, a missing file or a
        # refused --<Task>Features-* / --<Task>FineTuned-* value is named before anything is scheduled.
        plan = get_task(self.task).plan
        try:
            plan.split_config(**self.split_config())
            self.option_values()
        except (TypeError, ValueError) as err:
            raise ValueError(f"{self.task_family}: {err}") from None
        check_chain(self.evaluation())

    def split_config(self) -> dict:
        plan = get_task(self.task).plan
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(plan.split_config)}

    def option_values(self) -> tuple[dict, dict]:
        """(prep values, evaluation values) of the plan's further flags (``--no-fold``), if it has any."""
        plan = get_task(self.task).plan
        if plan.options is None:
            return {}, {}
        options = plan.options(**{f.name: getattr(self, f.name) for f in dataclasses.fields(plan.options)})
        return plan.option_values(options)

    def features_params(self, split: str) -> dict:
        plan = get_task(self.task).plan
        config = plan.split_config(**self.split_config())
        params = {"splits": self.split_config(), "split_file": split, **plan.prep_values(config),
                  **self.option_values()[0]}
        if self.model_dir is not None:
            params["model_dir"] = self.model_dir
        return params

    def evaluation(self) -> EvaluationTask:
        splits = Splits(task=self.task, config=self.split_config())
        splits.out_dir  # a missing input file is an error now, naming the file
        finetune = {"train_features": self.features_params("train"),
                    "select_features": self.features_params("validation"), "model_dir": self.model_dir}
        return EVALUATIONS[self.task](finetune=finetune, test_features=self.features_params("test"),
                                      input=str(splits.split_path("test")), world_size=self.world_size,
                                      prep_nproc=self.nproc, **self.option_values()[1])

    def requires(self):
        return self.evaluation()

    def artifacts(self) -> dict[str, dict[str, Path]] | None:
        evaluation = self.evaluation()
        upstream = evaluation.requires()
        found = {"evals": {self.task: upstream_dir(evaluation)}, "models": {self.task: upstream_dir(upstream["model"])},
                 "features": {f"{self.task}-test": upstream_dir(upstream["features"])}}
        for role, task in upstream["model"].requires().items():
            found["features"][f"{self.task}-{role}"] = upstream_dir(task)
        folders = [folder for stage in found.values() for folder in stage.values()]
        return None if None in folders else found

    def folder_kind(self) -> str:
        return f"{self.task}-run"

    def pending_payload(self) -> dict:
        return self.split_config()

    def name_payload(self) -> dict | None:
        found = self.artifacts()
        if found is None:
            return None
        return {"artifacts": sorted(str(folder) for stage in found.values() for folder in stage.values())}

    def run(self):
        found = self.artifacts()
        summary = self.ready_dir() / SUMMARY
        splits = Splits(task=self.task, config=self.split_config()).out_dir
        write_run_summary(summary, features=found["features"], models=found["models"], evals=found["evals"],
                          splits={self.task: splits})
        print(f"bertflow: run summary at {summary}")
