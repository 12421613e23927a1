"""Benchmark entry tasks (``TaskSpec.plan``: a ``SuitePlan``), one generated per task that has one, e.g. ``GlueResults``.

    luigi --module pipeline GlueResults --tasks cola,sst2,mrpc,stsb,rte,wnli --seeds 3 --local-scheduler
    luigi --module pipeline GlueResults --tasks rte --seeds 5 --model-dir DIR --local-scheduler

Every member x seed (seeds 1..N) is one cached ``<Task>FineTuned`` on the member's training file and
one cached ``<Task>Evaluation`` per file it is scored on, so a new seed or a new member runs only what is
missing. A member's recipe is its luigi.cfg section (the suite's ``recipe_section``): any
``<Task>FineTuned`` parameter (epochs, lr, max_steps, ...) or prep field (max_seq_length), over
the ``[<Task>FineTuned]`` / ``[<Task>Features]`` defaults. The output,
``<runs_dir>/results/<task>-<hash>/``, is the suite's table (Markdown, JSON, chart); the hash covers
the evaluation folders, so any change upstream gives a new table.
"""

from __future__ import annotations

from pathlib import Path

import luigi
from luigi.task_register import Register

from pipeline.artifacts import Artifact, check_chain, upstream_dir
from pipeline.evaluate import EVALUATIONS, EvaluationTask
from pipeline.finetune import FINETUNED
from pipeline.params import ENCODER_HELP, EncoderDirParameter
from pipeline.prep_tasks import FEATURES
from prep.pool import available_cpus
from tasks import all_tasks, get_task
from tasks.spec import SuitePlan


def section_values(section: str, task_class: type[luigi.Task]) -> dict:
    """The options of luigi.cfg ``[section]`` that are parameters of ``task_class``, parsed by their types."""
    config = luigi.configuration.get_config()
    if not config.has_section(section):
        return {}
    params = dict(task_class.get_params())
    return {name: params[name].parse(value) for name, value in config.items(section)
            if name in params and name not in ("task", "model_dir")}


class SuiteResults(Artifact):
    """Base of the generated suite entries (pipeline.generated; ``task`` is fixed by each)."""

    task = ""
    tasks = luigi.Parameter(default="", description="comma-separated members (default: the suite's bundled set)")
    seeds = luigi.IntParameter(default=3, description="runs per member, seeds 1..N")
    model_dir = EncoderDirParameter(default=None, description=ENCODER_HELP)
    model = EncoderDirParameter(default=None, description="the same as --model-dir (either spelling)")
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False)
    world_size = luigi.IntParameter(default=1, significant=False)

    @classmethod
    def class_attributes(cls, spec) -> dict:
        """What task ``spec``'s entry sets: the task's name."""
        return {"task": spec.name}

    @property
    def plan(self):
        return get_task(self.task).plan

    @property
    def done_file(self) -> str:
        return self.plan.table_name

    def encoder_dir(self) -> str | None:
        if self.model and self.model_dir and self.model != self.model_dir:
            raise ValueError(f"{self.task_family}: --model {self.model} and --model-dir {self.model_dir} differ; give one")
        return self.model or self.model_dir

    def members(self) -> list[str]:
        return self.plan.parse_members(self.tasks or self.plan.default_members)

    def finetune_params(self, member: str, seed: int) -> dict:
        train, tests = self.plan.member_plan(member)
        section = self.plan.recipe_section(member)
        recipe = section_values(section, FINETUNED[self.task])
        prep = section_values(section, FEATURES[self.task])
        params = {**recipe, "train_features": {**train, **prep}, "seed": seed}
        if self.plan.monitor:
            params["select_features"] = {**tests[0], **prep}
        if self.encoder_dir() is not None:
            params["model_dir"] = self.encoder_dir()
        return params

    def check_parameters(self) -> None:
        if self.seeds < 1:
            raise ValueError(f"{self.task_family}: --seeds is a count of runs per member (>= 1), got {self.seeds}")
        self.members()  # an unknown member is named here
        self.encoder_dir()
        check_chain([evaluation for group in self.eval_tasks().values() for evaluation in group])

    def eval_tasks(self) -> dict[tuple[str, int], list[EvaluationTask]]:
        found = {}
        for member in self.members():
            _, tests = self.plan.member_plan(member)
            prep = section_values(self.plan.recipe_section(member), FEATURES[self.task])
            for seed in range(1, self.seeds + 1):
                finetune = self.finetune_params(member, seed)
                found[(member, seed)] = [
                    EVALUATIONS[self.task](finetune=finetune, test_features={**test, **prep},
                                           world_size=self.world_size, prep_nproc=self.nproc) for test in tests]
        return found

    def requires(self):
        return [evaluation for evaluations in self.eval_tasks().values() for evaluation in evaluations]

    def eval_dirs(self) -> dict[tuple[str, int], list[Path]] | None:
        found = {key: [upstream_dir(evaluation) for evaluation in evaluations]
                 for key, evaluations in self.eval_tasks().items()}
        folders = [folder for group in found.values() for folder in group]
        return None if None in folders else found

    def folder_kind(self) -> str:
        return f"results/{self.task}"

    def pending_payload(self) -> dict:
        return {"members": self.members(), "seeds": self.seeds}

    def name_payload(self) -> dict | None:
        found = self.eval_dirs()
        if found is None:
            return None
        return {"evals": sorted(str(folder) for group in found.values() for folder in group)}

    def run(self):
        out_dir = self.ready_dir()
        self.plan.write_table(self.eval_dirs(), out_dir, [])
        self.set_progress_percentage(100)
        print(f"bertflow: {self.task} table at {out_dir / self.plan.table_name}")


def write_finished(entry: SuiteResults, out_dir: Path) -> list[tuple[str, int]]:
    """The table of the member x seed cells whose evaluations are all done, the others marked not run;
    returns those. For a run stopped by its deadline: ``python -m pipeline.suite GlueResults ... --out DIR``."""
    found, missing = {}, []
    for key, evaluations in entry.eval_tasks().items():
        if all(evaluation.complete() for evaluation in evaluations):
            found[key] = [upstream_dir(evaluation) for evaluation in evaluations]
        else:
            missing.append(key)
    if not found:
        raise ValueError(f"{entry.task_family}: no member x seed has finished yet")
    entry.plan.write_table(found, Path(out_dir), missing)
    return missing


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m pipeline.suite", description=write_finished.__doc__)
    entries = sorted(spec.plan.entry for spec in all_tasks() if isinstance(spec.plan, SuitePlan))
    parser.add_argument("entry", choices=entries)
    parser.add_argument("--tasks", default="")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--model-dir", "--model", default=None)
    parser.add_argument("--out", type=Path, required=True, help="folder for the table")
    args = parser.parse_args(argv)
    # By name through Luigi's registry, as ``luigi --module pipeline`` finds it (pipeline.generated made
    # it; run as ``-m``, this file's own classes are a second copy).
    entry = Register.get_task_cls(args.entry)(tasks=args.tasks, seeds=args.seeds, model_dir=args.model_dir)
    missing = write_finished(entry, args.out)
    print(f"table at {args.out / entry.plan.table_name}; not run: {missing or 'none'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
