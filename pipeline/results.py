"""``<Task>Results`` (e.g. ``GapResults``): every head x seed of a task through FullRun's plan,
then one table of mean ± spread.

    luigi --module pipeline GapResults --local-scheduler --GapFineTuned-epochs 3
    luigi --module pipeline GapResults --heads '["multiply"]' --seeds '[1, 2, 3, 4, 5]' --local-scheduler

The fine-tuning knobs come from [<Task>FineTuned] (luigi.cfg or ``--GapFineTuned-*`` flags) as in
FullRun; each head x seed is its own cached fine-tune and ``Evaluation`` (on the task's test
file, selected and calibrated on its select file when the fine-tune section says so), so adding
a seed runs only that seed. The output, ``<runs_dir>/results/<task>-<hash>/<task>.md`` and
``.json``, is ``python -m eval aggregate --by head [--ensemble]`` over those evaluations; the
hash covers their folders, so any change upstream gives a new table.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import bertflow, digest
from pipeline.fullrun import FullRun
from prep.pool import available_cpus
from tasks import all_tasks, get_task


class Results(luigi.Task):
    """Base of the generated ``<Task>Results`` classes (``task`` is fixed by each)."""

    task = ""
    heads = luigi.OptionalListParameter(default=None, description="heads to compare (default: all the task's heads)")
    seeds = luigi.ListParameter(default=[1, 2, 3])
    model = luigi.OptionalParameter(default=None, description="BERT-family model folder (default: packaged MiniLM)")
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False)
    world_size = luigi.IntParameter(default=1, significant=False)

    @property
    def table_name(self) -> str:
        return f"{self.task}.md"

    def head_list(self) -> list[str]:
        return list(self.heads) if self.heads is not None else list(get_task(self.task).heads)

    def _fullrun(self) -> FullRun:
        only = {spec.name: spec.name == self.task for spec in all_tasks()}
        return FullRun(model=self.model, nproc=self.nproc, world_size=self.world_size, profile=False, **only)

    def plan(self) -> dict | None:
        """The feature, model and evaluation tasks, or None while a data file is still missing."""
        run = self._fullrun()
        if not all(task.complete() for task in run.data_tasks()):
            return None
        heads = self.head_list()
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds or not heads:
            raise ValueError(f"{self.task_family}: give distinct seeds and at least one head (seeds {list(self.seeds)})")
        known = get_task(self.task).heads
        unknown = sorted(set(heads) - set(known))
        if unknown:
            raise ValueError(f"{self.task_family}: unknown heads {unknown}; choose from {list(known)}")
        features = run.feature_tasks()
        base = run.model_tasks(features)[self.task]
        test = run.eval_tasks(features, {self.task: base})[self.task]
        models = {(head, seed): base.clone(head=head, seed=seed) for head in heads for seed in self.seeds}
        evals = {key: test.clone(model_dir=str(model.run_dir)) for key, model in models.items()}
        return {"data": run.data_tasks(), "features": features, "models": models, "evals": evals}

    def out_dir(self, plan: dict) -> Path:
        folders = [str(plan["evals"][key].out_dir) for key in sorted(plan["evals"])]
        return Path(bertflow().runs_dir) / "results" / f"{self.task}-{digest({'evals': folders})}"

    def output(self):
        plan = self.plan()
        if plan is None:
            return luigi.LocalTarget(str(Path(bertflow().runs_dir) / "results" / "pending" / "not-yet" / self.table_name))
        return luigi.LocalTarget(str(self.out_dir(plan) / self.table_name))

    def run(self):
        from eval.aggregate import aggregate_to_files

        yield self._fullrun().data_tasks()
        plan = self.plan()
        for stage, percent in (("features", 10), ("models", 80), ("evals", 95)):
            self.set_status_message(f"{stage}: {len(plan[stage])} tasks")
            yield list(plan[stage].values())
            self.set_progress_percentage(percent)
        eval_dirs = [plan["evals"][(head, seed)].out_dir for head in self.head_list() for seed in self.seeds]
        out = self.out_dir(plan) / self.table_name
        ensemble = len(self.seeds) > 1 and get_task(self.task).ensemble is not None
        aggregate_to_files(eval_dirs, out, by=("head",), ensemble=ensemble)
        self.set_progress_percentage(100)
        print(f"bertflow: {self.task} results table at {out}")


RESULTS = {spec.name: type(f"{spec.luigi_prefix}Results", (Results,), {"task": spec.name, "__module__": __name__})
           for spec in all_tasks()}
globals().update({cls.__name__: cls for cls in RESULTS.values()})
