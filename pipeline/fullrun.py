"""``FullRun``: data -> features -> fine-tuning -> evaluation for every registered task, one command.

    luigi --module pipeline FullRun --nproc 12 --world-size 2            # against a running luigid
    luigi --module pipeline FullRun --local-scheduler                    # no scheduler needed

``--nproc`` (prep processes) and ``--world-size`` (training processes) flow down to the stages;
every other knob comes from luigi.cfg sections named after the tasks ([SquadFeatures],
[GapFineTuned], [SquadFineTuned], [RaceEvaluation], [Profile], [FullRun]) or ``--Task-param`` flags.
Each registered task takes part (``--<task> false`` leaves one out) with the data roles its
``FullRunPlan`` names: train on one file, choose epochs / calibrate on another (optional),
score on a third.

The DAG is static: FullRun requires the evaluations and the profile, an evaluation its
fine-tune, eval features and data file, a fine-tune its features, features their data file,
so ``luigi-deps-tree --module pipeline FullRun`` and luigid's graph show the whole chain before
anything runs. Artifacts are content-addressed (see pipeline.artifacts): a features folder is
named after its input file's sha256 and its settings, a run folder after its settings and its
features folders' names, and so on down the chain, so an edited data file re-runs exactly what
depends on it. Until a data file exists, the artifacts named after it have a pending name. The
run's own output, ``<runs_dir>/run-<hash>/summary.md``, is named after every artifact folder
of the run: rerunning with nothing changed finds it and does no work.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import Artifact, check_chain, upstream_dir
from pipeline.evaluate import EVALUATIONS, EvaluationTask
from pipeline.finetune import FINETUNED
from pipeline.params import ENCODER_HELP, EncoderDirParameter
from pipeline.profile import Profile
from pipeline.summary import SUMMARY, write_run_summary
from prep.pool import available_cpus
from tasks import all_tasks
from tasks.spec import FullRunPlan


def _task_switches() -> dict:
    """Per task: ``--<task> true|false`` and the subset parameters its FullRun roles declare."""
    params = {}
    for spec in all_tasks():
        if not isinstance(spec.plan, FullRunPlan):  # a task whose data the user brings: not part of FullRun
            continue
        params[spec.name] = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                                description=f"run {spec.name}")
        for role in spec.plan.roles().values():
            if role.subset_flag:
                params[f"{spec.name}_{role.subset_flag}"] = luigi.OptionalIntParameter(default=None,
                                                                                       description=role.subset_help)
    return params


class FullRun(Artifact):
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False,
                               description="prep processes (capped below the CPU count)")
    world_size = luigi.IntParameter(default=1, significant=False, description="training processes (GPUs)")
    model_dir = EncoderDirParameter(default=None, description=ENCODER_HELP)
    profile = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    profile_task = luigi.OptionalParameter(
        default=None, description="whose training steps to profile (default: the last enabled task in name order)")
    # 0 means all too for the subset parameters: a command line cannot unset a value luigi.cfg sets.
    locals().update(_task_switches())

    # --- the plan: every stage's task, from parameters and config alone -------------------
    def tasks(self) -> list:
        return [spec for spec in all_tasks() if isinstance(spec.plan, FullRunPlan) and getattr(self, spec.name)]

    def features_params(self, spec, role_name: str) -> dict | None:
        """The ``<Task>Features`` parameters of one data role (None: the task has no such role)."""
        role = spec.plan.roles().get(role_name)
        if role is None:
            return None
        params = {"data": role.data, **role.prep}
        if role.subset_flag:
            params[role.subset_field] = getattr(self, f"{spec.name}_{role.subset_flag}") or None
        if self.model_dir is not None:
            params["model_dir"] = self.model_dir
        return params

    def finetune_params(self, spec) -> dict:
        return {"train_features": self.features_params(spec, "train"),
                "select_features": self.features_params(spec, "select"), "model_dir": self.model_dir}

    def eval_tasks(self) -> dict[str, EvaluationTask]:
        return {spec.name: EVALUATIONS[spec.name](finetune=self.finetune_params(spec),
                                                  test_features=self.features_params(spec, "test"),
                                                  world_size=self.world_size, prep_nproc=self.nproc)
                for spec in self.tasks()}

    def profile_tasks(self) -> dict[str, Profile]:
        """Profile training steps of one task's model on its own training features.

        The profile takes the model, head, precision and batch of that fine-tuning task, so a
        knob that changes a step's work re-profiles; the learning rate, which does not, doesn't.
        """
        names = [spec.name for spec in self.tasks()]
        if not self.profile or not names:
            return {}
        name = self.profile_task if self.profile_task in names else names[-1]
        trained = FINETUNED[name](**self.finetune_params(next(s for s in self.tasks() if s.name == name)))
        return {name: Profile(task=name, train_features=trained.train_features, model_dir=self.model_dir,
                              world_size=self.world_size, head=trained.resolved_head, precision=trained.precision,
                              global_batch_size=trained.global_batch_size, prep_nproc=self.nproc)}

    def check_parameters(self) -> None:
        check_chain(self.requires())  # a refused --<Task>FineTuned-* or --<Task>Features-* value, named now

    def requires(self):
        return {"evals": self.eval_tasks(), "profiles": self.profile_tasks()}

    def artifacts(self) -> dict[str, dict[str, Path]] | None:
        """Every artifact folder of the run by stage and name, or None while one has no name yet."""
        found: dict[str, dict[str, Path | None]] = {"features": {}, "models": {}, "evals": {}, "profiles": {}}
        for name, evaluation in self.eval_tasks().items():
            upstream = evaluation.requires()
            found["evals"][name] = upstream_dir(evaluation)
            found["models"][name] = upstream_dir(upstream["model"])
            found["features"][f"{name}-test"] = upstream_dir(upstream["features"])
            for role, task in upstream["model"].requires().items():
                found["features"][f"{name}-{role}"] = upstream_dir(task)
        for name, profile in self.profile_tasks().items():
            found["profiles"][name] = upstream_dir(profile)
        folders = [folder for stage in found.values() for folder in stage.values()]
        return None if None in folders else found

    # --- the artifact: named after every folder of the run -----------------------------------
    done_file = SUMMARY

    def folder_kind(self) -> str:
        return "run"

    def pending_payload(self) -> dict:
        return {"tasks": [spec.name for spec in self.tasks()], "profile": self.profile}

    def name_payload(self) -> dict | None:
        found = self.artifacts()
        if found is None:
            return None
        return {"artifacts": sorted(str(folder) for stage in found.values() for folder in stage.values())}

    def run(self):
        found = self.artifacts()
        summary = self.ready_dir() / SUMMARY
        write_run_summary(summary, features=found["features"], models=found["models"], evals=found["evals"],
                          profiles=found["profiles"])
        self.set_progress_percentage(100)
        print(f"bertflow: run summary at {summary}")
