"""A fine-tune as one trial of an Optuna study: the pruning hook of a hyper-parameter sweep.

``pipeline/sweep.py`` runs every trial as an ordinary fine-tune whose TrainConfig names the study
(``trial_storage``, ``trial_study``, ``trial_number``). After each epoch's held-out evaluation
and its checkpoint, :class:`TrialReporter` reports the figure the study asks for (its
``epoch_metric`` user attribute, e.g. ``eval_loss``) at step = epoch, then asks the study's
pruner (rebuilt from its ``pruner`` user attribute, so trainer and sweep prune alike) whether to
stop. A pruned run writes ``pruned.json`` and raises :class:`TrialPruned`: its folder keeps the
epoch-end checkpoint and has no ``metrics.json``, so it never looks complete, and a later run
with the same settings resumes it. Nothing here knows a task.
"""

from __future__ import annotations

import time
from pathlib import Path

from prep.artifact import write_json_atomic
from train.dist import DistEnv, all_gather_objects

EPOCH_METRIC_ATTR = "epoch_metric"  # study user attributes the sweep sets
PRUNER_ATTR = "pruner"
PRUNED_FILE = "pruned.json"
PRUNED_EXIT_CODE = 3  # python -m train's exit status for a pruned trial


class TrialPruned(Exception):
    """The study's pruner stopped this run (not an error: the sweep records the trial as pruned)."""


def open_storage(url: str):
    """The study database at ``url`` (any SQLAlchemy URL); SQLite waits for a busy file instead of failing."""
    import optuna

    import sqlalchemy.exc

    engine_kwargs = {"connect_args": {"timeout": 120}} if url.startswith("sqlite") else {}
    for attempt in range(5):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        except sqlalchemy.exc.SQLAlchemyError:
            # Two workers opening a new database at once both create its schema; one loses, then finds it made.
            if attempt == 4:
                raise
            time.sleep(0.5 * (attempt + 1))


def make_pruner(record: dict | None):
    """``{"name": "MedianPruner", "kwargs": {...}}`` -> that ``optuna.pruners`` object (None: never prune)."""
    import optuna

    if not record:
        return optuna.pruners.NopPruner()
    return getattr(optuna.pruners, record["name"])(**record.get("kwargs", {}))


class TrialReporter:
    """Reports per-epoch held-out figures to the configured trial (a no-op without one)."""

    def __init__(self, trial_storage: str | None, trial_study: str | None, trial_number: int | None,
                 run_dir: Path, env: DistEnv):
        self.enabled = trial_number is not None
        self.env, self.run_dir, self.trial = env, Path(run_dir), None
        if not (self.enabled and env.is_main):
            return
        import optuna

        storage = open_storage(trial_storage)
        study_id = storage.get_study_id_from_name(trial_study)
        attrs = storage.get_study_user_attrs(study_id)
        self.metric = attrs.get(EPOCH_METRIC_ATTR, "eval_loss")
        study = optuna.load_study(study_name=trial_study, storage=storage, pruner=make_pruner(attrs.get(PRUNER_ATTR)))
        self.trial = optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, trial_number))
        self.number = trial_number
        (self.run_dir / PRUNED_FILE).unlink(missing_ok=True)  # an earlier trial's verdict on this folder

    def report(self, epoch: int, metrics: dict, may_prune: bool = True) -> None:
        """Report ``metrics[epoch_metric]`` at step ``epoch``; with ``may_prune``, raise :class:`TrialPruned`
        (on every rank) if the study prunes the trial."""
        if not self.enabled:
            return
        verdict = None
        if self.trial is not None:
            if self.metric not in metrics:
                raise ValueError(f"the study reports {self.metric!r} per epoch; the held-out evaluation gives "
                                 f"{sorted(metrics)}")
            value = float(metrics[self.metric])
            self.trial.report(value, epoch)
            if may_prune and self.trial.should_prune():
                verdict = {"trial_number": self.number, "epoch": epoch, "metric": self.metric, "value": value}
                write_json_atomic(self.run_dir / PRUNED_FILE, verdict)
        verdict = all_gather_objects(verdict, self.env)[0]  # rank 0 decides for every rank
        if verdict is not None:
            raise TrialPruned(f"trial {verdict['trial_number']} pruned after epoch {verdict['epoch']} "
                              f"({verdict['metric']} {verdict['value']:.4f})")
