"""``FullRun``: data -> features -> fine-tuning -> evaluation for every registered task, one command.

    luigi --module pipeline FullRun --nproc 12 --world-size 2            # against a running luigid
    luigi --module pipeline FullRun --local-scheduler                    # no scheduler needed

``--nproc`` (prep processes) and ``--world-size`` (training processes) flow down to the stages;
every other knob comes from luigi.cfg sections named after the tasks ([SquadFeatures],
[GapFineTuned], [SquadFineTuned], [Evaluation], [Profile], [FullRun]) or ``--Task-param`` flags.
Each registered task takes part (``--<task> false`` leaves one out) with the data roles its
``fullrun`` plan names: train on one file, choose epochs / calibrate on another (optional),
score on a third. ``<Task>FineTuned`` classes are generated here, one per task.

Artifacts are content-addressed (see pipeline.artifacts), so stages chain through dynamic
dependencies: a feature folder's path needs its input's sha256, so the data files come first,
then features, then models, then evaluations. The run's own output, ``<runs_dir>/run-<hash>/
summary.md``, is named after the hash of every artifact path in the plan: rerunning with
nothing changed finds it and does no work.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import bertflow, digest
from pipeline.data import DataFile
from pipeline.evaluate import Evaluation
from pipeline.finetune import FineTuned
from pipeline.prep_tasks import FEATURES
from pipeline.profile import Profile
from prep.pool import available_cpus
from tasks import all_tasks, task_names

SUMMARY = "summary.md"


class FineTunedTask(FineTuned):
    """Base of the generated ``<Task>FineTuned`` classes: FineTuned with its own luigi.cfg section."""


def _finetuned_class(spec) -> type:
    return type(f"{spec.luigi_prefix}FineTuned", (FineTunedTask,), {
        "task": luigi.ChoiceParameter(choices=task_names(), default=spec.name), "__module__": __name__,
        "__doc__": f"FineTuned for {spec.name}, with its own [{spec.luigi_prefix}FineTuned] section in luigi.cfg.",
    })


FINETUNED = {spec.name: _finetuned_class(spec) for spec in all_tasks()}
globals().update({cls.__name__: cls for cls in FINETUNED.values()})


def _task_switches() -> dict:
    """Per task: ``--<task> true|false`` and the subset parameters its FullRun roles declare."""
    params = {}
    for spec in all_tasks():
        params[spec.name] = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                                description=f"run {spec.name}")
        for role in spec.fullrun.roles().values():
            if role.subset_flag:
                params[f"{spec.name}_{role.subset_flag}"] = luigi.OptionalIntParameter(default=None,
                                                                                       description=role.subset_help)
    return params


class FullRun(luigi.Task):
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False,
                               description="prep processes (capped below the CPU count)")
    world_size = luigi.IntParameter(default=1, significant=False, description="training processes (GPUs)")
    model = luigi.OptionalParameter(default=None, description="BERT-family model folder (default: packaged MiniLM)")
    profile = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    profile_task = luigi.OptionalParameter(
        default=None, description="whose training steps to profile (default: the last enabled task in name order)")
    # 0 means all too for the subset parameters: a command line cannot unset a value luigi.cfg sets.
    locals().update(_task_switches())

    # --- the plan: every stage's task, from parameters and config alone -------------------
    def tasks(self) -> list:
        return [spec for spec in all_tasks() if getattr(self, spec.name)]

    def data_tasks(self) -> list[DataFile]:
        names = [role.data for spec in self.tasks() for role in spec.fullrun.roles().values()]
        return [DataFile(name=name) for name in dict.fromkeys(names)]

    def feature_tasks(self) -> dict[str, luigi.Task]:
        """``{"<task>-<role>": features task}`` for the roles train / select / test."""
        common = dict(tokenizer=self.model, nproc=self.nproc)
        tasks = {}
        for spec in self.tasks():
            for role_name, role in spec.fullrun.roles().items():
                values = dict(role.prep)
                if role.subset_flag:
                    values[role.subset_field] = getattr(self, f"{spec.name}_{role.subset_flag}") or None
                tasks[f"{spec.name}-{role_name}"] = FEATURES[spec.name](data=role.data, **common, **values)
        return tasks

    def model_tasks(self, features: dict) -> dict[str, FineTuned]:
        common = dict(model_dir=self.model, world_size=self.world_size, out_dir=bertflow().runs_dir)
        tasks = {}
        for spec in self.tasks():
            select = features.get(f"{spec.name}-select")
            tasks[spec.name] = FINETUNED[spec.name](
                features_dir=str(features[f"{spec.name}-train"].out_dir),
                eval_features_dir=str(select.out_dir) if select is not None else None, **common)
        return tasks

    def eval_tasks(self, features: dict, models: dict) -> dict[str, Evaluation]:
        return {spec.name: Evaluation(task=spec.name, model_dir=str(models[spec.name].run_dir),
                                      features_dir=str(features[f"{spec.name}-test"].out_dir),
                                      data=spec.fullrun.test.data)
                for spec in self.tasks()}

    def profile_tasks(self, models: dict) -> dict[str, Profile]:
        """Profile training steps of one task's model on its own features.

        The profile takes the model, head, precision and batch of that fine-tuning task, so a
        knob that changes a step's work re-profiles; the learning rate, which does not, doesn't.
        """
        if not self.profile or not models:
            return {}
        name = self.profile_task if self.profile_task in models else sorted(models)[-1]
        trained = models[name]
        return {name: Profile(task=name, features_dir=trained.features_dir, model_dir=self.model,
                              world_size=self.world_size, head=trained.resolved_head, precision=trained.precision,
                              global_batch_size=trained.global_batch_size)}

    def plan(self) -> dict | None:
        """Every artifact task of the run, or None while a data file is still missing."""
        if not all(task.complete() for task in self.data_tasks()):
            return None
        features = self.feature_tasks()
        models = self.model_tasks(features)
        return {"features": features, "models": models, "evals": self.eval_tasks(features, models),
                "profiles": self.profile_tasks(models)}

    def run_dir(self, plan: dict) -> Path:
        paths = sorted(str(t.output().path) for stage in plan.values() for t in stage.values())
        return Path(bertflow().runs_dir) / f"run-{digest({'artifacts': paths})}"

    # --- Luigi ------------------------------------------------------------------------------
    def output(self):
        plan = self.plan()
        if plan is None:  # no input hashes yet, so no run folder: point at one that cannot exist
            return luigi.LocalTarget(str(Path(bertflow().runs_dir) / "run-pending" / "not-yet" / SUMMARY))
        return luigi.LocalTarget(str(self.run_dir(plan) / SUMMARY))

    def run(self):
        from eval.summary import write_run_summary

        self.set_status_message("data: fetching or checking the input files")
        yield self.data_tasks()
        plan = self.plan()
        stages = (("features", 25), ("models", 50), ("evals", 75), ("profiles", 95))
        for stage, percent in stages:
            self.set_status_message(f"{stage}: {len(plan[stage])} tasks")
            yield list(plan[stage].values())
            self.set_progress_percentage(percent)
        run_dir = self.run_dir(plan)
        write_run_summary(
            run_dir / SUMMARY,
            features={name: t.out_dir for name, t in plan["features"].items()},
            models={name: t.run_dir for name, t in plan["models"].items()},
            evals={name: t.out_dir for name, t in plan["evals"].items()},
            profiles={name: t.out_dir for name, t in plan["profiles"].items()},
        )
        self.set_progress_percentage(100)
        print(f"bertflow: run summary at {run_dir / SUMMARY}")
