"""``<Task>Results`` (e.g. ``GapResults``): every head x seed of a task through FullRun's plan,
then one table of mean ± spread.

    luigi --module pipeline GapResults --local-scheduler --GapFineTuned-epochs 3
    luigi --module pipeline GapResults --heads '["multiply"]' --seeds '[1, 2, 3, 4, 5]' --local-scheduler

The fine-tuning knobs come from [<Task>FineTuned] (luigi.cfg or ``--GapFineTuned-*`` flags) as in
FullRun; each head x seed is its own cached fine-tune and ``<Task>Evaluation`` (on the task's test
file, selected and calibrated on its select file when the fine-tune section says so), so adding
a seed runs only that seed. The output, ``<runs_dir>/results/<task>-<hash>/<task>.md`` and
``.json``, is ``python -m eval aggregate --by head [--ensemble]`` over those evaluations; the
hash covers their folders, so any change upstream gives a new table.
"""

from __future__ import annotations

import luigi

from pipeline.artifacts import Artifact, check_chain, upstream_dir
from pipeline.evaluate import EvaluationTask
from pipeline.fullrun import FullRun
from pipeline.params import ENCODER_HELP, EncoderDirParameter
from prep.pool import available_cpus
from tasks import all_tasks, get_task
from tasks.spec import FullRunPlan


class Results(Artifact):
    """Base of the generated ``<Task>Results`` classes (pipeline.generated; ``task`` is fixed by each)."""

    task = ""
    heads = luigi.OptionalListParameter(default=None, description="heads to compare (default: all the task's heads)")
    seeds = luigi.ListParameter(default=[1, 2, 3])
    model_dir = EncoderDirParameter(default=None, description=ENCODER_HELP)
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False)
    world_size = luigi.IntParameter(default=1, significant=False)

    @classmethod
    def class_attributes(cls, spec) -> dict:
        """What task ``spec``'s generated class sets: the task's name."""
        return {"task": spec.name}

    @property
    def done_file(self) -> str:
        return f"{self.task}.md"  # the table; eval aggregate writes its .json beside it

    def head_list(self) -> list[str]:
        return list(self.heads) if self.heads is not None else list(get_task(self.task).train.heads)

    def _fullrun(self) -> FullRun:
        only = {spec.name: spec.name == self.task for spec in all_tasks() if isinstance(spec.plan, FullRunPlan)}
        return FullRun(model_dir=self.model_dir, nproc=self.nproc, world_size=self.world_size, profile=False, **only)

    def check_parameters(self) -> None:
        heads = self.head_list()
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds or not heads:
            raise ValueError(f"{self.task_family}: give distinct seeds and at least one head (seeds {list(self.seeds)})")
        known = get_task(self.task).train.heads
        unknown = sorted(set(heads) - set(known))
        if unknown:
            raise ValueError(f"{self.task_family}: unknown heads {unknown}; choose from {list(known)}")
        check_chain(list(self.eval_tasks().values()))  # a refused --<Task>FineTuned-* value, named now

    def eval_tasks(self) -> dict[tuple, EvaluationTask]:
        """One Evaluation per (head, seed): FullRun's evaluation of the task, its fine-tune re-headed and re-seeded."""
        heads = self.head_list()
        base = self._fullrun().eval_tasks()[self.task]
        return {(head, seed): base.clone(finetune={**base.finetune, "head": head, "seed": seed})
                for head in heads for seed in self.seeds}

    def requires(self):
        return list(self.eval_tasks().values())

    def folder_kind(self) -> str:
        return f"results/{self.task}"

    def pending_payload(self) -> dict:
        return {"evals": sorted(map(str, self.eval_tasks()))}

    def name_payload(self) -> dict | None:
        evals = self.eval_tasks()
        folders = [upstream_dir(evals[key]) for key in sorted(evals)]
        return None if None in folders else {"evals": [str(folder) for folder in folders]}

    def run(self):
        from eval.aggregate import aggregate_to_files

        evals = self.eval_tasks()
        eval_dirs = [upstream_dir(evals[(head, seed)]) for head in self.head_list() for seed in self.seeds]
        out = self.ready_dir() / self.done_file
        ensemble = len(self.seeds) > 1 and get_task(self.task).eval.ensemble is not None
        aggregate_to_files(eval_dirs, get_task(self.task).eval, out, by=("head",), ensemble=ensemble)
        self.set_progress_percentage(100)
        print(f"bertflow: {self.task} results table at {out}")

