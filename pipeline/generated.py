"""Every per-task Luigi class, made here in one loop over the task registry.

    luigi --module pipeline GapFeatures --data gap-development --local-scheduler
    luigi --module pipeline GapResults --local-scheduler
    luigi --module pipeline TextClassification --data leanings.csv --text-column text --label-column label

For each registered task (``tasks/<name>/``; ``Gap`` is gap's ``luigi_prefix``):

- ``<Task>Features`` (:class:`~pipeline.prep_tasks.FeaturesTask`): its prep config's fields as parameters;
- ``<Task>FineTuned`` (:class:`~pipeline.finetune.FineTunedTask`): FineTuned with its own luigi.cfg section;
- ``<Task>Evaluation`` (:class:`~pipeline.evaluate.EvaluationTask`): its eval config's fields, their
  defaults and its own luigi.cfg section;

and, by the task's plan, its entry: ``<Task>Results`` (:class:`~pipeline.results.Results`) for a
FullRunPlan, the plan's named entry (:class:`~pipeline.userdata.UserDataRun`, e.g.
``TextClassification``) for a UserDataPlan, or (:class:`~pipeline.suite.SuiteResults`, e.g.
``GlueResults``) for a SuitePlan. Each base says what a task's class sets
(``class_attributes(spec)``); the tables other tasks find a task's class in (``FEATURES``,
``FINETUNED``, ``EVALUATIONS``) are filled here.
"""

from __future__ import annotations

from pipeline.evaluate import EVALUATIONS, EvaluationTask
from pipeline.finetune import FINETUNED, FineTunedTask
from pipeline.prep_tasks import FEATURES, FeaturesTask
from pipeline.results import Results
from pipeline.suite import SuiteResults
from pipeline.userdata import UserDataRun
from tasks import all_tasks
from tasks.spec import FullRunPlan, SuitePlan, TaskSpec, UserDataPlan

GENERATED: dict[str, type] = {}  # class name -> class, every one made here


def _make(base: type, name: str, spec: TaskSpec, doc: str, table: dict | None = None) -> None:
    cls = type(name, (base,), {**base.class_attributes(spec), "__module__": __name__, "__doc__": doc})
    GENERATED[name] = cls
    if table is not None:
        table[spec.name] = cls


def _generate() -> None:
    for spec in all_tasks():
        task, prefix = spec.name, spec.luigi_prefix
        _make(FeaturesTask, f"{prefix}Features", spec,
              f"{task} features: ``tasks/{task}/prep.py`` on the shared pool, as a cached artifact.", FEATURES)
        _make(FineTunedTask, f"{prefix}FineTuned", spec,
              f"FineTuned for {task}, with its own [{prefix}FineTuned] section in luigi.cfg.", FINETUNED)
        _make(EvaluationTask, f"{prefix}Evaluation", spec,
              f"A {task} run scored on eval features; its eval settings in [{prefix}Evaluation].", EVALUATIONS)
        if isinstance(spec.plan, FullRunPlan):
            _make(Results, f"{prefix}Results", spec,
                  f"Every {task} head x seed through FullRun's plan, then one table of mean ± spread.")
        elif isinstance(spec.plan, UserDataPlan):
            _make(UserDataRun, spec.plan.entry, spec,
                  f"{spec.description}: the user's file(s) split, featurised, fine-tuned and evaluated.")
        elif isinstance(spec.plan, SuitePlan):
            _make(SuiteResults, spec.plan.entry, spec,
                  f"{spec.description}: every member x seed fine-tuned and scored, then one table.")


_generate()
globals().update(GENERATED)
__all__ = ["GENERATED", *GENERATED]
