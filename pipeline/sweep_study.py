"""The Optuna side of a sweep (no Luigi here): search space, study, trial slots, objective values.

A sweep of N trials is N *slots*; slot k owns the trials tagged ``slot = k``. A slot's task
claims a trial (:func:`claim_trial`), which is its RUNNING trial if it has one (an earlier
attempt was killed: the trial is redone with the same settings, its fine-tune resuming from
its checkpoint) or else a new one from ``study.ask()`` (the storage gives every ask its own
trial, so two workers never share one). A finished slot has exactly one COMPLETE or PRUNED
trial; a trial whose run failed is marked FAIL and the slot asks again next time, so the count
of finished trials is always the requested one.

Search space, as written in luigi.cfg's ``[Sweep] space`` (JSON; every key a FineTuned
parameter, i.e. a TrainConfig field)::

    {"lr": ["log", 1e-5, 3e-4],            # float, log-uniform
     "warmup_ratio": ["float", 0.0, 0.2],  # float, uniform (optional 4th value: step)
     "epochs": ["int", 1, 4],              # int (optional 4th value: step)
     "global_batch_size": ["choice", 8, 16, 32],
     "head": ["choice", "multiply", "concat"]}
"""

from __future__ import annotations

import math

import optuna

from train.trial import EPOCH_METRIC_ATTR, PRUNER_ATTR, open_storage

KINDS = ("log", "float", "int", "choice")
SLOT_ATTR = "slot"
SPACE_ATTR = "space"
FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
optuna.logging.set_verbosity(optuna.logging.WARNING)


class SpaceError(ValueError):
    """A search space entry that cannot be sampled (named in the message)."""


def check_space(space: dict, allowed: set[str], heads: tuple[str, ...] = ()) -> dict:
    """The space as plain ``{name: [kind, *values]}``, or :class:`SpaceError` naming the bad entry."""
    if not space:
        raise SpaceError("the search space is empty: set [Sweep] space in luigi.cfg (or --space '{...}')")
    checked = {}
    for name, entry in space.items():
        entry = list(entry) if isinstance(entry, (list, tuple)) else [entry]
        where = f"search space entry {name!r} = {entry}"
        if name not in allowed:
            raise SpaceError(f"{where}: not a fine-tuning setting; choose from {sorted(allowed)}")
        if not entry or entry[0] not in KINDS:
            raise SpaceError(f"{where}: give [kind, ...] with kind one of {KINDS}")
        kind, values = entry[0], entry[1:]
        if kind == "choice":
            if not values:
                raise SpaceError(f"{where}: a choice needs at least one value")
            if name == "head" and set(values) - set(heads):
                raise SpaceError(f"{where}: this task's heads are {list(heads)}")
        else:
            if len(values) not in (2, 3) or not all(isinstance(v, (int, float)) for v in values):
                raise SpaceError(f"{where}: give [{kind!r}, low, high] (and optionally a step)")
            if not values[0] < values[1] or (kind == "log" and values[0] <= 0):
                raise SpaceError(f"{where}: needs low < high{' and low > 0' if kind == 'log' else ''}")
        checked[name] = [kind, *values]
    return checked


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """One value per space entry (a redone trial gets back the values it was given)."""
    params = {}
    for name, (kind, *values) in space.items():
        if kind == "choice":
            params[name] = trial.suggest_categorical(name, values)
        elif kind == "int":
            params[name] = trial.suggest_int(name, int(values[0]), int(values[1]),
                                             step=int(values[2]) if len(values) > 2 else 1)
        else:
            step = values[2] if len(values) > 2 and kind == "float" else None
            params[name] = trial.suggest_float(name, float(values[0]), float(values[1]), log=kind == "log", step=step)
    return params


def in_space(params: dict, space: dict) -> dict:
    """Those of ``params`` (e.g. today's recipe) that lie inside the space: the baseline trial."""
    inside = {}
    for name, (kind, *values) in space.items():
        value = params.get(name)
        if value is None:
            continue
        if (kind == "choice" and value in values) or (kind != "choice" and values[0] <= value <= values[1]):
            inside[name] = value
    return inside


def open_study(storage_url: str, study_name: str, direction: str, epoch_metric: str, pruner: dict | None,
               space: dict, sampler_seed: int, startup_trials: int) -> optuna.Study:
    """Create the study or load it; its user attributes tell the trainers what to report and how to prune."""
    sampler = optuna.samplers.TPESampler(seed=sampler_seed, n_startup_trials=startup_trials)
    from train.trial import make_pruner

    study = optuna.create_study(storage=open_storage(storage_url), study_name=study_name, direction=direction,
                                sampler=sampler, pruner=make_pruner(pruner), load_if_exists=True)
    wanted = {EPOCH_METRIC_ATTR: epoch_metric, PRUNER_ATTR: pruner, SPACE_ATTR: space}
    for key, value in wanted.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
        elif study.user_attrs[key] != value:
            raise ValueError(f"study {study_name!r} in {storage_url} was made with {key} = {study.user_attrs[key]}, "
                             f"not {value}: give another --study-name")
    if study.direction.name.lower() != direction:
        raise ValueError(f"study {study_name!r} {study.direction.name.lower()}s; this sweep would {direction}")
    return study


def slot_trials(study: optuna.Study, slot: int) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get(SLOT_ATTR) == slot]


def finished_trial(study: optuna.Study, slot: int) -> optuna.trial.FrozenTrial | None:
    """The slot's COMPLETE or PRUNED trial, if it has one."""
    done = [t for t in slot_trials(study, slot) if t.state in FINISHED]
    return done[-1] if done else None


def trial_handle(study: optuna.Study, number: int) -> optuna.Trial:
    """A live ``optuna.Trial`` for trial ``number`` (e.g. one this process did not ask for)."""
    storage = study._storage  # the study's own storage object (public API gives no other handle)
    study_id = storage.get_study_id_from_name(study.study_name)
    return optuna.trial.Trial(study, storage.get_trial_id_from_study_id_trial_number(study_id, number))


def claim_trial(study: optuna.Study, slot: int, baseline: dict | None = None) -> optuna.Trial:
    """The slot's RUNNING trial (an interrupted attempt: redone), else a new one tagged with the slot.

    ``baseline`` (slot 0 of a new study): enqueue these settings first, so the first trial is
    today's recipe and the report shows how far the search moved from it.
    """
    running = [t for t in slot_trials(study, slot) if t.state == optuna.trial.TrialState.RUNNING]
    if running:
        return trial_handle(study, running[-1].number)
    if baseline and not any(t.user_attrs.get("baseline") for t in study.get_trials(deepcopy=False)):
        study.enqueue_trial(baseline, user_attrs={"baseline": True})  # the next ask, whichever slot, takes it
    trial = study.ask()
    trial.set_user_attr(SLOT_ATTR, slot)
    return trial


def report_history(trial: optuna.Trial, values: dict[int, float]) -> None:
    """Report per-epoch values the trainer did not (a cached fine-tune: its epochs ran earlier)."""
    known = study_trial(trial).intermediate_values
    for epoch, value in sorted(values.items()):
        if epoch not in known and value is not None and math.isfinite(value):
            trial.report(float(value), int(epoch))


def study_trial(trial: optuna.Trial) -> optuna.trial.FrozenTrial:
    return next(t for t in trial.study.get_trials(deepcopy=False) if t.number == trial.number)


def held_out_value(finetune_metrics: dict, metric: str) -> float | None:
    """The fine-tune's final held-out ``metric``: after calibration for ``eval_loss``, else at the
    selected epoch (``select_best``), else at the last evaluation."""
    calibration = finetune_metrics.get("calibration")
    if metric == "eval_loss" and calibration:
        return float(calibration["eval_loss_after"])
    history = finetune_metrics.get("eval") or []
    selected = finetune_metrics.get("selected")
    if selected:
        history = [entry for entry in history if entry.get("step") == selected["step"]] or history
    value = history[-1].get(metric) if history else None
    return None if value is None else float(value)


def epoch_values(finetune_metrics: dict, metric: str) -> dict[int, float]:
    return {int(entry["epoch"]): entry.get(metric) for entry in finetune_metrics.get("eval") or []
            if entry.get("epoch")}

