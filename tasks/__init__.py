"""The task registry: every benchmark or data set bertflow fine-tunes on is one package here.

A task package (``tasks/<name>/``) exports ``SPEC``, a :class:`tasks.spec.TaskSpec` of plain
module-level functions and config classes: its data files, reader and chunk converter (run by
the shared prep pool), batch collation, heads and loss, held-out metrics, evaluation, scoring,
report sections and headline metrics. The engines (prep/, train/, eval/, profiling/,
pipeline/) look a task up here and never compare task names.

Adding a task: a new package ``tasks/<name>/`` with ``SPEC``, its tests, and a luigi.cfg section
for its stages. Nothing else changes: the package's name is the task's name everywhere
(``--task <name>``, ``python -m prep <name>``, ``python -m eval <name>``, ``<Name>Features``
and ``<Name>FineTuned`` in the Luigi DAG).
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from tasks.spec import TaskSpec

__all__ = ["TaskSpec", "get_task", "task_names", "all_tasks", "UnknownTaskError"]


class UnknownTaskError(ValueError):
    pass


@lru_cache(maxsize=1)
def task_names() -> tuple[str, ...]:
    """Names of the registered tasks (the packages under tasks/), sorted; imports nothing."""
    return tuple(sorted(info.name for info in pkgutil.iter_modules(__path__) if info.ispkg))


@lru_cache(maxsize=None)
def get_task(name: str) -> TaskSpec:
    """The ``SPEC`` of task ``name``."""
    if name not in task_names():
        raise UnknownTaskError(f"unknown task {name!r}; registered: {', '.join(task_names())}")
    spec = importlib.import_module(f"{__name__}.{name}").SPEC
    if spec.name != name:
        raise RuntimeError(f"tasks/{name}/ exports a SPEC named {spec.name!r}")
    return spec


def all_tasks() -> list[TaskSpec]:
    return [get_task(name) for name in task_names()]
