"""``Sweep``: a hyper-parameter search with Optuna in which every trial is an ordinary cached fine-tune.

    luigi --module pipeline Sweep --task gap --trials 30 --local-scheduler
    luigi --module pipeline Sweep --task gap --trials 30 --workers 2 --storage sqlite:///runs/sweeps.db
    luigi --module pipeline Sweep --task gap --trials 30 --final-seeds 3 --local-scheduler   # + test split
    optuna-dashboard sqlite:///runs/sweeps.db                                                # browse the study

The search space is ``[Sweep] space`` in luigi.cfg (see :mod:`pipeline.sweep_study`); the
other fine-tuning knobs come from ``[<Task>FineTuned]`` as in FullRun. A study (TPE sampler,
seeded; median pruner by default) lives in a database, SQLite under the runs root unless
``--storage`` names any SQLAlchemy URL (PostgreSQL: workers on several machines share one study
through luigid). ``--trials N`` makes N ``SweepTrial`` tasks, one per slot; each claims a
trial, trains the task's ``<Task>FineTuned`` with the suggested settings (the same run folder as
any run with those settings: cached ones cost nothing) and scores it with a ``<Task>Evaluation`` on
the task's validation file. The objective (the task's ``sweep_objective``, default the
held-out loss, which for GAP is the validation log loss) is read on the validation split only;
the test split is first touched by ``--final-seeds K``, which retrains the best settings with
seeds 1..K and scores them on the test file (``eval aggregate``, with the ensemble).

Per epoch the trainer reports its held-out figure to the trial, and the pruner may stop it
(train/trial.py); a pruned trial is recorded as pruned, its folder keeps the checkpoint and no
``metrics.json``. Killed and started again, a sweep keeps its finished trials, redoes the
interrupted one (same settings; the fine-tune resumes from its checkpoint) and ends with N
finished trials. Outputs under ``<runs_dir>/sweep/<study>/``: ``trials/slot-*.json``, and per
trial count ``trials-N/`` (report.md, trials.csv, sweep.json, history.png, importances.png)
with ``final-K-seeds/`` inside.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import luigi

from pipeline.artifacts import bertflow, digest, significant_params, upstream_dir
from pipeline.evaluate import EVALUATIONS, EvaluationTask
from pipeline.finetune import FINETUNED
from pipeline.fullrun import FullRun
from pipeline.params import ENCODER_HELP, EncoderDirParameter
from pipeline.sweep_report import REPORT, SWEEP_JSON, dashboard_command, write_report
from prep.artifact import write_json_atomic
from prep.folders import EvalFolder, RunFolder
from prep.locking import artifact_lock
from prep.pool import available_cpus
from tasks import get_task, task_names
from tasks.spec import FullRunPlan
from tasks.spec import SweepObjective
from train.launch import visible_cuda_devices
from train.trial import PRUNED_FILE

TRIAL_FIELDS = ("trial_storage", "trial_study", "trial_number")
FINAL = "final.json"  # the final step's record, beside its table


class SweepSettings(luigi.Task):
    """The parameters a sweep and its trial tasks share (each trial task is given the sweep's values)."""

    # Study names (<task>-<hash>: the study in its database and the sweep's folder) were published
    # with 10 hex digits (docs/results/sweep), like run folders; the default study name keeps them.
    study_hash_length = 10

    task = luigi.ChoiceParameter(choices=task_names(), description="a registered task")
    space = luigi.DictParameter(default={}, description="the search space (luigi.cfg [Sweep] space; JSON)")
    storage = luigi.OptionalParameter(default=None, description="SQLAlchemy URL of the study database "
                                                                "(default: sqlite:///<runs_dir>/sweeps.db)")
    study_name = luigi.OptionalParameter(default=None, description="default: <task>-<hash of the sweep's settings>")
    seed = luigi.IntParameter(default=0, description="seeds the TPE sampler")
    startup_trials = luigi.IntParameter(default=10, description="random trials before TPE models the results")
    pruner = luigi.ChoiceParameter(choices=("median", "none"), default="median")
    pruner_startup_trials = luigi.IntParameter(default=5, description="trials the median pruner waits for")
    pruner_warmup_epochs = luigi.IntParameter(default=0, description="a trial's first N epochs are never pruned")
    baseline = luigi.BoolParameter(default=True, parsing=luigi.BoolParameter.EXPLICIT_PARSING,
                                   description="first trial: the configured [<Task>FineTuned] recipe")
    metric = luigi.OptionalParameter(default=None, description="objective (default: the task's sweep_objective)")
    direction = luigi.OptionalChoiceParameter(choices=("minimize", "maximize"), default=None)
    epoch_metric = luigi.OptionalParameter(default=None, description="per-epoch figure reported for pruning")
    finetune = luigi.OptionalDictParameter(
        default=None, description="<Task>FineTuned parameters to start from (default: the task's FullRun roles)")
    test_features = luigi.OptionalDictParameter(
        default=None, description="the final step's test features (default: the plan's test file)")
    model_dir = EncoderDirParameter(default=None, description=ENCODER_HELP)
    nproc = luigi.IntParameter(default=max(1, available_cpus() - 1), significant=False)
    world_size = luigi.IntParameter(default=1, significant=False)

    # --- the plan ---------------------------------------------------------------------------
    def objective(self) -> SweepObjective:
        """The task's sweep_objective, with --metric / --direction / --epoch-metric over it. Another
        metric in the same direction keeps the task's per-epoch figure; in the other direction the
        per-epoch figure defaults to the trainer's ``eval_<metric>`` (``--metric accuracy
        --direction maximize`` -> ``eval_accuracy``)."""
        base = get_task(self.task).sweep_objective
        direction = self.direction or base.direction
        epoch_metric = self.epoch_metric or (base.epoch_metric if direction == base.direction or not self.metric
                                             else f"eval_{self.metric.removeprefix('eval_')}")
        return SweepObjective(metric=self.metric or base.metric, direction=direction, epoch_metric=epoch_metric)

    def _plan(self) -> FullRun:
        if not isinstance(get_task(self.task).plan, FullRunPlan):
            raise ValueError(f"{self.task_family}: task {self.task} has no FullRun plan: give --finetune (with its "
                             "select_features, the validation split) and, for --final-seeds, --test-features")
        return FullRun(model_dir=self.model_dir, nproc=self.nproc, world_size=self.world_size, profile=False,
                       **{spec: spec == self.task for spec in task_names() if isinstance(get_task(spec).plan, FullRunPlan)})

    def base_finetune(self) -> dict:
        base = dict(self.finetune) if self.finetune is not None else self._plan().finetune_params(get_task(self.task))
        if not base.get("select_features"):
            raise ValueError(f"{self.task_family}: a sweep measures on a validation split, and task {self.task}'s "
                             "fine-tune has none: give --finetune with select_features")
        return base

    def checked_space(self) -> dict:
        from pipeline.sweep_study import check_space

        finetuned = FINETUNED[self.task]
        allowed = {name for name, param in finetuned.get_params() if param.significant} - {
            *TRIAL_FIELDS, "task", "train_features", "select_features", "features_dir", "eval_features_dir",
            "prep_nproc", "runs_dir", "model_dir", "world_size"}
        return check_space(dict(self.space), allowed, get_task(self.task).train.heads)

    def finetuned(self, params: dict, **extra) -> luigi.Task:
        return FINETUNED[self.task](**{**self.base_finetune(), **params}, world_size=self.world_size,
                                    prep_nproc=self.nproc, **extra)

    def evaluation(self, params: dict, test_features: dict) -> EvaluationTask:
        return EVALUATIONS[self.task](finetune={**self.base_finetune(), **params}, test_features=test_features,
                                      world_size=self.world_size, prep_nproc=self.nproc)

    def validation_evaluation(self, params: dict) -> EvaluationTask:
        return self.evaluation(params, dict(self.base_finetune()["select_features"]))

    def pruner_record(self) -> dict | None:
        if self.pruner == "none":
            return None
        # Epochs are reported as steps 1, 2, ...; optuna's earliest pruning step is n_warmup_steps, so
        # N protected epochs is N + 1 (0 stays 0: every epoch can be pruned, as with 1).
        warmup = self.pruner_warmup_epochs + 1 if self.pruner_warmup_epochs > 0 else 0
        return {"name": "MedianPruner", "kwargs": {"n_startup_trials": self.pruner_startup_trials,
                                                   "n_warmup_steps": warmup}}

    def resolved_study_name(self) -> str:
        if self.study_name:
            return self.study_name
        space = self.checked_space()
        recipe = {k: v for k, v in significant_params(self.finetuned({})).items() if k not in space}
        payload = {"space": space, "recipe": recipe, "objective": self.objective().__dict__, "seed": self.seed,
                   "startup_trials": self.startup_trials, "pruner": self.pruner_record(), "baseline": self.baseline}
        return f"{self.task}-{digest(payload, self.study_hash_length)}"

    def storage_url(self) -> str:
        if self.storage:
            return self.storage
        runs = Path(bertflow().runs_dir)
        runs.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{runs / 'sweeps.db'}"

    def sweep_dir(self) -> Path:
        return Path(bertflow().runs_dir) / "sweep" / self.resolved_study_name()

    def open_study(self, sampler_seed: int):
        from pipeline.sweep_study import open_study

        objective = self.objective()
        return open_study(self.storage_url(), self.resolved_study_name(), objective.direction, objective.epoch_metric,
                          self.pruner_record(), self.checked_space(), sampler_seed, self.startup_trials)


class SweepTrial(SweepSettings):
    """One slot of a sweep: one finished (complete or pruned) trial, recorded in ``trials/slot-<k>.json``."""

    slot = luigi.IntParameter(description="which of the sweep's trials (0-based)")

    @property
    def resources(self):  # what its fine-tune holds (FineTuned's own rule)
        return {"gpu": self.world_size} if visible_cuda_devices() > 0 else {}

    @property
    def priority(self):
        return -self.slot  # one worker takes the slots in order

    def requires(self):
        evaluation = self.validation_evaluation({})
        upstream = evaluation.requires()
        return {**upstream["model"].requires(), "validation": upstream["features"],
                **({"data": upstream["data"]} if "data" in upstream else {})}

    def output(self):
        return luigi.LocalTarget(str(self.sweep_dir() / "trials" / f"slot-{self.slot:03d}.json"))

    def run(self):
        # One process per slot even across separate schedulers (two --local-scheduler runs of one sweep).
        slot = Path(self.output().path)
        with artifact_lock(slot.with_suffix(""), f"sweep {self.resolved_study_name()} slot {self.slot}"):
            if not self.complete():
                self._run_slot()

    def _run_slot(self):
        from pipeline.sweep_study import claim_trial, finished_trial, in_space, suggest

        study = self.open_study(sampler_seed=self.seed * 100_003 + self.slot)  # a slot samples alike on a rerun
        done = finished_trial(study, self.slot)  # killed after the study heard, before the file was written
        if done is not None:
            return self._write(done.number, done.state.name, done.value, done.params, study)
        space = self.checked_space()
        # Slot 0 alone enqueues the baseline (once per study): a second worker cannot enqueue it again.
        baseline = in_space(significant_params(self.finetuned({})), space) if self.baseline and self.slot == 0 else None
        trial = claim_trial(study, self.slot, baseline)
        params = suggest(trial, space)
        started = time.perf_counter()
        self.set_status_message(f"trial {trial.number}: {params}")
        state, value = self._run_trial(study, trial, params)
        self._write(trial.number, state, value, params, study, wall_seconds=time.perf_counter() - started)

    def _run_trial(self, study, trial, params: dict) -> tuple[str, float | None]:
        """Fine-tune (reporting epochs to the trial) and evaluate on the validation split; tell the study."""
        from optuna.trial import TrialState

        from pipeline.sweep_study import epoch_values, report_history

        trial_fields = dict(zip(TRIAL_FIELDS, (self.storage_url(), study.study_name, trial.number)))
        finetuned = self._in_process(self.finetuned(params, **trial_fields))
        try:
            finetuned.run()  # the artifact's own lock and completeness check: cached settings cost nothing
        except Exception:
            verdict = _read_json(finetuned.run_dir / PRUNED_FILE)
            if verdict and verdict.get("trial_number") == trial.number:
                study.tell(trial, state=TrialState.PRUNED)
                return "PRUNED", None
            study.tell(trial, state=TrialState.FAIL)  # the next run of this slot asks for a new trial
            raise
        finetune_metrics = _read_json(RunFolder(finetuned.run_dir).metrics)
        objective = self.objective()
        report_history(trial, epoch_values(finetune_metrics, objective.epoch_metric))
        evaluation = self._in_process(self.validation_evaluation(params))
        if not evaluation.complete():
            evaluation.run()
        value = _objective_value(objective.metric, evaluation.out_dir, finetune_metrics)
        study.tell(trial, value)
        return "COMPLETE", value

    def _in_process(self, task: luigi.Task) -> luigi.Task:
        """``task`` run inside this one (a pruned fine-tune must not fail the DAG): it reports through us."""
        task.set_progress_percentage, task.set_status_message = self.set_progress_percentage, self.set_status_message
        return task

    def _write(self, number: int, state: str, value, params: dict, study, wall_seconds: float | None = None):
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
        intermediate = {int(k): v for k, v in sorted(frozen.intermediate_values.items())}
        record = {"slot": self.slot, "trial_number": number, "state": state, "value": value, "params": params,
                  "baseline": bool(frozen.user_attrs.get("baseline")), "intermediate": intermediate,
                  "last_intermediate": intermediate[max(intermediate)] if intermediate else None,
                  "wall_seconds": wall_seconds}
        finetuned = self.finetuned(params)
        record["run_dir"] = str(finetuned.run_dir)
        if state == "COMPLETE":
            evaluation = self.validation_evaluation(params)
            record["eval_dir"] = str(evaluation.out_dir)
            metrics = _read_json(EvalFolder(evaluation.out_dir).metrics) or {}
            headline = get_task(self.task).eval.headline
            record["headline"] = headline(metrics["metrics"]) if headline and metrics.get("metrics") else None
        Path(self.output().path).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.output().path, record)


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _objective_value(metric: str, eval_dir: Path, finetune_metrics: dict) -> float:
    """``metric`` from the validation evaluation's metrics, else from the fine-tune's held-out figures."""
    from pipeline.sweep_study import held_out_value

    metrics_file = EvalFolder(eval_dir).metrics
    evaluated = (_read_json(metrics_file) or {}).get("metrics") or {}
    value = evaluated.get(metric)
    if value is None:
        value = held_out_value(finetune_metrics or {}, metric)
    if value is None:
        raise ValueError(f"objective {metric!r} is neither in {metrics_file} ({sorted(evaluated)}) nor a "
                         "held-out figure of the fine-tune (eval_loss, eval_<count>)")
    return float(value)


class Sweep(SweepSettings):
    """``--trials N`` slots, then the report; ``--final-seeds K`` adds the best settings on the test split."""

    trials = luigi.IntParameter(default=20, description="finished (complete or pruned) trials wanted")
    final_seeds = luigi.IntParameter(default=0, description="retrain the best settings with seeds 1..K and "
                                                            "score them on the test split (0: no final step)")

    def requires(self):
        if self.trials < 1 or self.final_seeds < 0:
            raise ValueError(f"{self.task_family}: --trials must be >= 1 and --final-seeds >= 0")
        return [self.clone(SweepTrial, slot=slot) for slot in range(self.trials)]

    def report_dir(self) -> Path:
        return self.sweep_dir() / f"trials-{self.trials}"

    def final_dir(self) -> Path:
        return self.report_dir() / f"final-{self.final_seeds}-seeds"

    def output(self):
        if self.final_seeds:
            return luigi.LocalTarget(str(self.final_dir() / FINAL))
        return luigi.LocalTarget(str(self.report_dir() / REPORT))

    def run(self):
        records = [_read_json(task.output().path) for task in self.requires()]
        summary = _read_json(self.report_dir() / SWEEP_JSON)
        if summary is None or not (self.report_dir() / REPORT).is_file():
            summary = write_report(self.open_study(self.seed), records, self.report_dir(), task=self.task,
                                   metric=self.objective().metric, direction=self.objective().direction,
                                   storage_url=self.storage_url(), space=self.checked_space())
        print(f"bertflow: sweep report at {self.report_dir() / REPORT}; browse the study: "
              f"{dashboard_command(self.storage_url())}")
        if not self.final_seeds:
            return
        if summary["best"] is None:
            raise ValueError(f"{self.task_family}: no trial completed, so there are no best settings to retrain")
        # Only now, with every trial finished, does anything read the test split.
        evals = self.final_evaluations(summary["best"]["params"])
        yield evals
        self._write_final(summary, evals)

    def final_evaluations(self, params: dict) -> list[EvaluationTask]:
        test = dict(self.test_features) if self.test_features is not None else \
            self._plan().features_params(get_task(self.task), "test")
        return [self.evaluation({**params, "seed": seed}, test) for seed in range(1, self.final_seeds + 1)]

    def _write_final(self, summary: dict, evals: list[EvaluationTask]) -> None:
        from eval.aggregate import aggregate_to_files

        eval_dirs = [upstream_dir(task) for task in evals]
        table = self.final_dir() / f"{self.task}.md"
        ensemble = self.final_seeds > 1 and get_task(self.task).eval.ensemble is not None
        aggregate_to_files(eval_dirs, get_task(self.task).eval, table, by=("head",), ensemble=ensemble)
        aggregated = _read_json(table.with_suffix(".json"))
        Path(self.output().path).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.output().path, {
            "task": self.task, "study": self.resolved_study_name(), "trials": self.trials,
            "best": summary["best"], "seeds": list(range(1, self.final_seeds + 1)),
            "eval_dirs": [str(d) for d in eval_dirs],
            "run_dirs": [str(upstream_dir(task.requires()["model"])) for task in evals],
            "test": aggregated["groups"][0] if aggregated and aggregated.get("groups") else None,
        })
        print(f"bertflow: the best settings on the test split, {self.final_seeds} seeds: {table}")
