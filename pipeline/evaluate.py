"""``<Task>Evaluation`` and ``Evaluation``: a fine-tuned model scored on eval features; wraps :mod:`eval.run`.

    luigi --module pipeline GapEvaluation --local-scheduler              # builds its whole chain
    luigi --module pipeline Evaluation --task gap --local-scheduler      # the same, by task name
    luigi --module pipeline SquadEvaluation --finetune '{"train_features": {"data": "squad-train-v1.1",
        "split": "train", "max_articles": 32}}' --test-features '{"data": "squad-dev-v1.1", "split": "eval"}'
    luigi --module pipeline Evaluation --task squad --run-dir runs/finetune-squad-span-<hash> \\
        --features-dir runs/features/squad-eval-<hash> --data squad-dev-v1.1 --local-scheduler

Each task's evaluation is its own class, ``<Task>Evaluation`` (pipeline.generated): the fields of
the task's eval config are its parameters, with that config's defaults and the task's own
luigi.cfg section (``[RaceEvaluation] batch_size = 8``, ``--RaceEvaluation-batch-size 8``); the
DAG (FullRun, ``<Task>Results``, suites, user-data entries, sweeps) builds these. ``Evaluation
--task X`` is the generic entry: it takes every task's eval flags, and evaluates with task X's
settings under the flags it is given (a flag task X does not have is an error).

Upstream tasks are edges of the DAG: the ``<Task>FineTuned`` named by ``--finetune`` (its
parameters; default: the task's FullRun roles, the rest from luigi.cfg) and the
``<Task>Features`` of ``--test-features``; or finished folders by path (``--run-dir``,
``--features-dir``). The output folder ``<runs_dir>/eval/<task>-<hash>`` holds metrics.json,
the benchmark-format predictions, report.md with its plots, and manifest.json (written last;
the folder appears in one rename; prep.folders.EvalFolder). The hash covers the significant
parameters, the upstream folders' names (themselves content-addressed), the data file's sha256
and the eval schema version; batch size and device only change speed.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import Artifact, FolderOutput, content_hash, significant_params, upstream_dir
from pipeline.data import OFFICIAL, DataFile
from pipeline.finetune import FINETUNED
from pipeline.params import dataclass_parameters
from pipeline.prep_tasks import features_task
from prep.folders import EvalFolder, FeaturesFolder, RunFolder
from prep.pool import available_cpus
from tasks import all_tasks, get_task, task_names
from tasks.spec import FullRunPlan

_COMMON = ("task", "finetune", "test_features", "run_dir", "features_dir", "input", "data")
SPEED_ONLY = ("batch_size",)  # eval-config fields that only change speed: in no folder name


class EvaluationTask(Artifact):
    """Base of the generated ``<Task>Evaluation`` classes and of ``Evaluation``: what is scored, on
    what, where the result goes. ``eval_values()`` gives the task's eval-config values."""

    task = ""  # the task's name, set by each generated class (a parameter of Evaluation)
    # What is scored: upstream tasks (DAG edges) by their parameters, or finished folders by path.
    finetune = luigi.OptionalDictParameter(
        default=None, description="the <Task>FineTuned parameters of the model (default: the task's FullRun plan)")
    test_features = luigi.OptionalDictParameter(
        default=None, description="the eval features' <Task>Features parameters (default: the plan's test file)")
    run_dir = luigi.OptionalParameter(default=None, description="a finished run folder, instead of --finetune")
    features_dir = luigi.OptionalParameter(default=None, description="a finished eval features folder, instead")
    input = luigi.OptionalParameter(default=None, description="the benchmark file the features were built from")
    data = luigi.OptionalChoiceParameter(choices=tuple(OFFICIAL), default=None,
                                         description="an official file by name (default: the test features' file)")
    world_size = luigi.IntParameter(default=1, significant=False, description="training processes, if it trains")
    prep_nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False)
    device = luigi.Parameter(default="auto", significant=False)

    done_file = EvalFolder.MANIFEST
    _eval_fields: tuple[str, ...] = ()

    @classmethod
    def class_attributes(cls, spec) -> dict:
        """What task ``spec``'s generated class sets: its eval config's fields as parameters."""
        params = dataclass_parameters(spec.eval.config, insignificant=SPEED_ONLY)
        return {**params, "task": spec.name, "_eval_fields": tuple(params)}

    @classmethod
    def settings(cls) -> dict:
        """The eval-config values luigi gives this class when none are passed: its ``--<Task>Evaluation-*``
        flags, its luigi.cfg section, the config's defaults."""
        family = cls.get_task_family()
        return {name: param.task_value(family, name) for name, param in cls.get_params() if name in cls._eval_fields}

    def eval_values(self) -> dict:
        """The task's eval-config values, by field name."""
        return {name: getattr(self, name) for name in self._eval_fields}

    def eval_config(self):
        return get_task(self.task).eval.config(**self.eval_values())

    def check_parameters(self) -> None:
        # A flag task --task does not have (Evaluation) or a value its eval config refuses.
        try:
            self.eval_config()
        except (TypeError, ValueError) as err:
            if str(err).startswith(f"{self.task_family}:"):
                raise
            raise ValueError(f"{self.task_family}: {err}") from None

    def _plan(self) -> tuple[dict, dict]:
        """(fine-tune parameters, test features parameters): given, or the task's FullRun roles."""
        plan = get_task(self.task).plan
        plan = plan if isinstance(plan, FullRunPlan) else None
        if plan is None and (self.finetune is None or self.test_features is None):
            raise ValueError(f"{self.task_family}: task {self.task} has no FullRun plan: give --finetune and "
                             "--test-features, or --run-dir and --features-dir")
        finetune = dict(self.finetune) if self.finetune is not None else {
            "train_features": {"data": plan.train.data, **plan.train.prep},
            "select_features": {"data": plan.select.data, **plan.select.prep} if plan.select else None,
        }
        test = dict(self.test_features) if self.test_features is not None else {"data": plan.test.data,
                                                                                 **plan.test.prep}
        return finetune, test

    def requires(self):
        finetune, test = self._plan()
        required = {
            "model": (FolderOutput(path=self.run_dir, marker=RunFolder.METRICS) if self.run_dir else
                      FINETUNED[self.task](**finetune, world_size=self.world_size, prep_nproc=self.prep_nproc)),
            "features": (FolderOutput(path=self.features_dir, marker=FeaturesFolder.MANIFEST) if self.features_dir else
                         features_task(self.task, test, finetune.get("model_dir"), self.prep_nproc)),
        }
        if self.data_name:
            required["data"] = DataFile(name=self.data_name)
        return required

    @property
    def data_name(self) -> str | None:
        if self.input is not None:
            return None
        return self.data or (None if self.features_dir else self._plan()[1].get("data"))

    @property
    def input_path(self) -> Path:
        if (self.input is None) == (self.data_name is None):
            raise ValueError(f"{self.task_family}: give exactly one of --input FILE or --data NAME")
        return Path(self.input) if self.input else DataFile(name=self.data_name).path

    def upstream_dirs(self) -> dict[str, Path] | None:
        """``{"model": run folder, "features": eval features folder}``, or None while one has no name yet."""
        required = self.requires()
        found = {key: upstream_dir(required[key]) for key in ("model", "features")}
        return None if None in found.values() else found

    def folder_kind(self) -> str:
        return f"eval/{self.task}"

    def pending_payload(self) -> dict:
        """The significant settings: what is scored and on what, and the task's significant eval fields."""
        common = {name: value for name, value in significant_params(self).items() if name in _COMMON}
        own = {name: value for name, value in self.eval_values().items() if name not in SPEED_ONLY}
        return {**common, "task": self.task, **own}

    def name_payload(self) -> dict | None:
        from eval.run import SCHEMA_VERSION

        upstream = self.upstream_dirs()
        if upstream is None or not self.input_path.is_file():
            return None
        return {**self.pending_payload(), "upstream": {key: folder.name for key, folder in upstream.items()},
                "data_sha256": content_hash(self.input_path), "schema_version": SCHEMA_VERSION}

    def run(self):
        from eval.run import run_evaluation

        if self.complete():  # finished by an earlier run after the scheduler looked (its data was missing then)
            return
        upstream = self.upstream_dirs()
        out_dir = self.ready_dir()
        self.set_status_message(f"evaluating {self.task} on {self.input_path.name}")
        run_evaluation(get_task(self.task), upstream["model"], upstream["features"], self.input_path, out_dir,
                       self.eval_config(), self.device)
        self.set_status_message(f"done: {out_dir}")


EVALUATIONS: dict[str, type[EvaluationTask]] = {}  # task name -> its <Task>Evaluation, filled by pipeline.generated


def _given_fields() -> dict[str, luigi.Parameter]:
    """Every task's eval-config fields as optional parameters (None: the task's own value)."""
    params: dict[str, luigi.Parameter] = {}
    for spec in all_tasks():
        found = dataclass_parameters(spec.eval.config, insignificant=SPEED_ONLY, optional=True)
        params.update({name: param for name, param in found.items() if name not in params})
    return params


_GIVEN_FIELDS = _given_fields()


def given_eval_values(task: str, given: dict, family: str) -> dict:
    """Task ``task``'s eval-config values: its ``<Task>Evaluation`` settings with the non-None ``given``
    over them; a field task ``task`` does not have is an error (``family`` names the asking task)."""
    own = EVALUATIONS[task].settings()
    given = {name: value for name, value in given.items() if value is not None}
    foreign = sorted(set(given) - set(own))
    if foreign:
        raise ValueError(f"{family}: task {task} has no eval setting {', '.join(foreign)} "
                         f"(its own: {', '.join(own) or 'none'})")
    return {**own, **given}


class Evaluation(EvaluationTask):
    """Task ``--task``'s evaluation (its ``<Task>Evaluation`` settings) with the eval flags given here over them."""

    task = luigi.ChoiceParameter(choices=task_names())
    locals().update(_GIVEN_FIELDS)

    def eval_values(self) -> dict:
        return given_eval_values(self.task, {name: getattr(self, name) for name in _GIVEN_FIELDS}, self.task_family)
