"""``GapResults``: every GAP head x seed through FullRun's plan, then one table of mean ± spread.

    luigi --module pipeline GapResults --local-scheduler --GapFineTuned-epochs 3
    luigi --module pipeline GapResults --heads '["multiply"]' --seeds '[1, 2, 3, 4, 5]' --local-scheduler

The fine-tuning knobs come from [GapFineTuned] (luigi.cfg or ``--GapFineTuned-*`` flags) as in
FullRun; each head x seed is its own cached ``GapFineTuned`` and ``Evaluation`` (on gap-test,
selected and calibrated on gap-validation when [GapFineTuned] says so), so adding a seed runs
only that seed. The output, ``<runs_dir>/results/gap-<hash>/gap.md`` and ``gap.json``, is
``python -m eval aggregate --by head --ensemble`` over those evaluations; the hash covers their
folders, so any change upstream gives a new table.
"""

from __future__ import annotations

from pathlib import Path

import luigi

from pipeline.artifacts import bertflow, digest
from pipeline.evaluate import Evaluation
from pipeline.fullrun import GAP_DATA, FullRun
from prep.pool import available_cpus
from train.config import GAP_HEADS

TABLE = "gap.md"


class GapResults(luigi.Task):
    heads = luigi.ListParameter(default=list(GAP_HEADS))
    seeds = luigi.ListParameter(default=[1, 2, 3])
    model = luigi.OptionalParameter(default=None, description="BERT-family model folder (default: packaged MiniLM)")
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False)
    world_size = luigi.IntParameter(default=1, significant=False)

    def _fullrun(self) -> FullRun:
        return FullRun(model=self.model, nproc=self.nproc, world_size=self.world_size, squad=False, profile=False)

    def plan(self) -> dict | None:
        """The feature, model and evaluation tasks, or None while a data file is still missing."""
        run = self._fullrun()
        if not all(task.complete() for task in run.data_tasks()):
            return None
        if len(set(self.seeds)) != len(self.seeds) or not self.seeds or not self.heads:
            raise ValueError(f"GapResults: give distinct seeds and at least one head (seeds {list(self.seeds)})")
        unknown = sorted(set(self.heads) - set(GAP_HEADS))
        if unknown:
            raise ValueError(f"GapResults: unknown heads {unknown}; choose from {list(GAP_HEADS)}")
        features = run.feature_tasks()
        base = run.model_tasks(features)["gap"]
        models = {(head, seed): base.clone(head=head, seed=seed) for head in self.heads for seed in self.seeds}
        evals = {key: Evaluation(task="gap", model_dir=str(model.run_dir),
                                 features_dir=str(features["gap-test"].out_dir), data=GAP_DATA["test"])
                 for key, model in models.items()}
        return {"data": run.data_tasks(), "features": features, "models": models, "evals": evals}

    def out_dir(self, plan: dict) -> Path:
        folders = [str(plan["evals"][key].out_dir) for key in sorted(plan["evals"])]
        return Path(bertflow().runs_dir) / "results" / f"gap-{digest({'evals': folders})}"

    def output(self):
        plan = self.plan()
        if plan is None:
            return luigi.LocalTarget(str(Path(bertflow().runs_dir) / "results" / "pending" / "not-yet" / TABLE))
        return luigi.LocalTarget(str(self.out_dir(plan) / TABLE))

    def run(self):
        from eval.aggregate import aggregate_to_files

        yield self._fullrun().data_tasks()
        plan = self.plan()
        for stage, percent in (("features", 10), ("models", 80), ("evals", 95)):
            self.set_status_message(f"{stage}: {len(plan[stage])} tasks")
            yield list(plan[stage].values())
            self.set_progress_percentage(percent)
        eval_dirs = [plan["evals"][(head, seed)].out_dir for head in self.heads for seed in self.seeds]
        out = self.out_dir(plan) / TABLE
        aggregate_to_files(eval_dirs, out, by=("head",), ensemble=len(self.seeds) > 1)
        self.set_progress_percentage(100)
        print(f"bertflow: GAP results table at {out}")
