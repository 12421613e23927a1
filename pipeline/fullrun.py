"""``FullRun``: data -> features -> fine-tuning -> evaluation for GAP and SQuAD, one command.

    luigi --module pipeline FullRun --nproc 12 --world-size 2            # against a running luigid
    luigi --module pipeline FullRun --local-scheduler                    # no scheduler needed

``--nproc`` (prep processes) and ``--world-size`` (training processes) flow down to the stages;
every other knob comes from luigi.cfg sections named after the tasks ([SquadFeatures],
[GapFineTuned], [SquadFineTuned], [Evaluation], [Profile], [FullRun]) or ``--Task-param`` flags.

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
from pipeline.prep_tasks import GapFeatures, SquadFeatures
from pipeline.profile import Profile
from prep.pool import available_cpus
from train.config import TASKS

SUMMARY = "summary.md"
GAP_DATA = {"train": "gap-development", "select": "gap-validation", "test": "gap-test"}
SQUAD_DATA = {"train": "squad-train-v1.1", "test": "squad-dev-v1.1"}


class GapFineTuned(FineTuned):
    """FineTuned for GAP, with its own [GapFineTuned] section in luigi.cfg."""

    task = luigi.ChoiceParameter(choices=TASKS, default="gap")


class SquadFineTuned(FineTuned):
    """FineTuned for SQuAD, with its own [SquadFineTuned] section in luigi.cfg."""

    task = luigi.ChoiceParameter(choices=TASKS, default="squad")


class FullRun(luigi.Task):
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False,
                               description="prep processes (capped below the CPU count)")
    world_size = luigi.IntParameter(default=1, significant=False, description="training processes (GPUs)")
    model = luigi.OptionalParameter(default=None, description="BERT-family model folder (default: packaged MiniLM)")
    gap = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    squad = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)
    # 0 means all too: a command line cannot unset a value luigi.cfg sets (make run's subset).
    squad_train_articles = luigi.OptionalIntParameter(default=None, description="first N train articles (0 or unset: all)")
    squad_dev_articles = luigi.OptionalIntParameter(default=None, description="first N dev articles (0 or unset: all)")
    profile = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING)

    # --- the plan: every stage's task, from parameters and config alone -------------------
    def data_tasks(self) -> list[DataFile]:
        names = (list(GAP_DATA.values()) if self.gap else []) + (list(SQUAD_DATA.values()) if self.squad else [])
        return [DataFile(name=name) for name in names]

    def feature_tasks(self) -> dict[str, luigi.Task]:
        common = dict(tokenizer=self.model, nproc=self.nproc)
        tasks = {}
        if self.gap:
            tasks.update({f"gap-{role}": GapFeatures(data=name, **common) for role, name in GAP_DATA.items()})
        if self.squad:
            tasks["squad-train"] = SquadFeatures(data=SQUAD_DATA["train"], split="train",
                                                 max_articles=self.squad_train_articles or None, **common)
            tasks["squad-test"] = SquadFeatures(data=SQUAD_DATA["test"], split="eval",
                                                max_articles=self.squad_dev_articles or None, **common)
        return tasks

    def model_tasks(self, features: dict) -> dict[str, FineTuned]:
        common = dict(model_dir=self.model, world_size=self.world_size, out_dir=bertflow().runs_dir)
        tasks = {}
        if self.gap:
            tasks["gap"] = GapFineTuned(features_dir=str(features["gap-train"].out_dir),
                                        eval_features_dir=str(features["gap-select"].out_dir), **common)
        if self.squad:
            tasks["squad"] = SquadFineTuned(features_dir=str(features["squad-train"].out_dir), **common)
        return tasks

    def eval_tasks(self, features: dict, models: dict) -> dict[str, Evaluation]:
        tasks = {}
        if self.gap:
            tasks["gap"] = Evaluation(task="gap", model_dir=str(models["gap"].run_dir),
                                      features_dir=str(features["gap-test"].out_dir), data=GAP_DATA["test"])
        if self.squad:
            tasks["squad"] = Evaluation(task="squad", model_dir=str(models["squad"].run_dir),
                                        features_dir=str(features["squad-test"].out_dir), data=SQUAD_DATA["test"])
        return tasks

    def profile_tasks(self, models: dict) -> dict[str, Profile]:
        """Profile training steps of the SQuAD model (GAP's without SQuAD) on its own features.

        The profile takes the model, head, precision and batch of that fine-tuning task, so a
        knob that changes a step's work re-profiles; the learning rate, which does not, doesn't.
        """
        if not self.profile or not models:
            return {}
        name = "squad" if "squad" in models else "gap"
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
