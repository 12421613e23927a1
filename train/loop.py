"""The training loop: one explicit loop for every task, on one process or many (DDP).

Per optimizer step, on every rank::

    for each of accumulation_steps micro-batches:
        (no_sync() on all but the last micro-batch)
        autocast forward -> loss / accumulation_steps -> scaler.scale(loss).backward()
    scaler.unscale_ -> clip_grad_norm_ -> scaler.step -> scaler.update
    -> zero_grad(set_to_none=True) -> scheduler.step

The global batch (config.global_batch_size) is the same whatever the world size; see
:mod:`train.data` for how the batch plan keeps the ranks in step and how a resumed run skips
what it already consumed, and :mod:`train.checkpoint` for what a checkpoint holds.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from prep.folders import RunFolder
from train import checkpoint as ckpt, fast_cpu
from train.config import TrainConfig, choose_precision
from train.optim import linear_warmup_decay, make_optimizer, seed_everything, total_train_steps
from train.data import FeatureSet, make_collate, make_loader, plan_epoch, steps_per_epoch
from train.dist import DistEnv, all_gather_objects, all_reduce_sum, barrier, to_device
from train.metrics_log import LossWindow, RunLogger, TrainClock, write_json_atomic, write_train_config
from train.evaluation import calibrate_temperature, evaluate, evaluations_since_best
from train.model import autocast_context, build_model, cpu_has_native_bf16, precision_warning, save_finetuned
from train.tracing import NullProfiler, Tracer
from train.trial import TrialReporter

log = logging.getLogger(__name__)


def _no_buffer_sync() -> dict:
    """BERT's buffers (position / token-type ids) are constants: no need to sync them every forward."""
    import inspect

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:  # torch >= 2.13
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}




class _Run:
    """One training run's state, shared by the pieces of :func:`train`: set-up, steps, epochs,
    checkpoints, held-out evaluation, finish."""

    def __init__(self, config: TrainConfig, spec, env: DistEnv, profiler, precision_choice: dict | None):
        self.config, self.spec, self.env, self.profiler = config, spec, env, profiler or NullProfiler()
        self.precision_choice = precision_choice
        self.folder = RunFolder(config.run_dir)
        self.ckpt_file = self.folder.last_checkpoint
        self.saved = self._load_saved()
        self.train_set = FeatureSet(config.features_dir, config.task)
        self.eval_set = FeatureSet(config.eval_features_dir, config.task) if config.eval_features_dir else None
        self.lengths = self.train_set.lengths() if config.length_bucketing else None
        self.per_epoch = steps_per_epoch(len(self.train_set), config.global_batch_size)
        self.total_steps = total_train_steps(config, len(self.train_set))
        self.accum = config.accumulation_steps(spec.sequences_per_row)
        self.micro = config.micro_batch_size(spec.sequences_per_row)
        if env.is_main:
            self.folder.path.mkdir(parents=True, exist_ok=True)
        write_train_config(config, self.train_set, env.is_main, self.micro, self.accum, precision_choice,
                           ckpt.SCHEMA_VERSION)
        self.step = self.epoch = self.step_in_epoch = 0
        self.loss_history: list[dict] = []
        self.eval_history: list[dict] = []
        self.wall_before = 0.0  # --resume: earlier processes' wall time, up to their last checkpoint
        self.last_loss = self.best = None
        self.stopped_early: dict | None = None  # --early-stopping-patience: where the run stopped

    def _load_saved(self) -> dict | None:
        if self.config.resume:
            saved = ckpt.load_checkpoint(self.ckpt_file)
            ckpt.check_compatible(saved["config"], self.config.run_defining(), self.ckpt_file)
            return saved
        if self.ckpt_file.exists():
            raise ckpt.CheckpointError(f"{self.ckpt_file} exists: pass --resume to continue that run, or use a new --out")
        return None

    def progress(self, phase: str, **extra) -> None:
        self.logger.progress({"phase": phase, "step": self.step, "total_steps": self.total_steps, "epoch": self.epoch,
                              "epochs": self.config.epochs, "loss": self.last_loss, **extra})


def setup(config: TrainConfig, spec, env: DistEnv, profiler=None, precision_choice: dict | None = None) -> _Run:
    """Data, model (DDP-wrapped when distributed), optimizer, schedule, scaler, logging; a resumed
    run's state and RNG restored. ``spec`` is the task's :class:`tasks.spec.TrainSpec`;
    ``precision_choice`` (requested, chosen, why) goes into train_config.json and metrics.json."""
    run = _Run(config, spec, env, profiler, precision_choice)
    seed_everything(config.seed)  # identical head init on every rank
    run.raw_model = build_model(spec, config.head, config.model_dir,
                                data_info=run.train_set.manifest.get("input") or {},
                                dropout=config.dropout, attention_dropout=config.attention_dropout).to(env.device)
    if config.fast_cpu and env.device.type == "cpu" and not config.compile:
        log.info("fast CPU training: %s", fast_cpu.install(run.raw_model))
    if config.compile:
        run.raw_model.compile()  # in place: the state dict keeps its keys, so checkpoints and saving are unchanged
    run.collate = make_collate(spec, run.raw_model.encoder.config.pad_token_id or 0, config.pad_to_multiple_of)
    run.optimizer = make_optimizer(run.raw_model, config, env.device)
    warmup_steps = math.ceil(config.warmup_ratio * run.total_steps)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(
        run.optimizer, functools.partial(linear_warmup_decay, warmup_steps=warmup_steps, total_steps=run.total_steps)
    )
    run.scaler = torch.amp.GradScaler(env.device.type, enabled=config.precision == "fp16")
    saved = run.saved
    if saved is not None:
        run.raw_model.load_state_dict(saved["model"])
        run.optimizer.load_state_dict(saved["optimizer"])
        run.scheduler.load_state_dict(saved["scheduler"])
        if saved["scaler"]:
            run.scaler.load_state_dict(saved["scaler"])
        run.step, run.epoch, run.step_in_epoch = saved["step"], saved["epoch"], saved["step_in_epoch"]
        # Checkpoints from before the histories were saved resume with empty ones.
        histories = json.loads(saved.get("histories", "{}"))
        run.loss_history, run.eval_history = histories.get("train_loss", []), histories.get("eval", [])
        run.wall_before = histories.get("wall_seconds", 0.0)
        check_early_stopping(run)  # a run that had stopped early stays stopped
    run.model = run.raw_model
    if env.distributed:
        run.model = DDP(run.raw_model, device_ids=[env.local_rank] if env.device.type == "cuda" else None,
                        gradient_as_bucket_view=True, **_no_buffer_sync())
    if saved is not None and saved["world_size"] == env.world_size:
        ckpt.restore_rng_state(saved["rng"][env.rank], env.device)
    else:
        if saved is not None and env.is_main:
            log.warning("resuming at world size %d from a checkpoint of world size %d: same batches, "
                        "but dropout draws differ from the unbroken run", env.world_size, saved["world_size"])
        seed_everything(config.seed + env.rank + 1_000_003 * run.step)  # per-rank dropout streams
    _log_setup(run)
    run.logger = RunLogger(run.folder.path, enabled=env.is_main)
    run.tracer = Tracer(config.nvtx, env.device)
    run.clock = TrainClock(env.device)
    run.bar = tqdm(total=run.total_steps, initial=run.step, unit="step", dynamic_ncols=True,
                   disable=not (env.is_main and config.progress_bar))
    # Throughput counts this process's steps after its first (allocator and kernel warm-up).
    run.measured = torch.zeros(3, dtype=torch.float64)  # steps, real tokens, padded tokens (this rank)
    run.window = LossWindow(env.device)
    run.first_step = run.step
    run.started = time.perf_counter()
    run.best_file = run.folder.best_checkpoint
    run.best = ckpt.load_best(run.best_file) if config.select_best and saved is not None else None
    run.trial = TrialReporter(config.trial_storage, config.trial_study, config.trial_number, run.folder.path, env)
    return run


def _log_setup(run: _Run) -> None:
    config, env = run.config, run.env
    if not env.is_main:
        return
    warning = precision_warning(config.precision, env.device.type)
    if warning:
        log.warning(warning)
    log.info("%s/%s on %s x%d (%s: %s): global batch %d = %d per device x %d accumulation x %d ranks; "
             "%d steps (%d per epoch)%s", config.task, config.head, env.device.type, env.world_size,
             config.precision, (run.precision_choice or {}).get("why", "asked for"), config.global_batch_size, run.micro, run.accum, env.world_size, run.total_steps,
             run.per_epoch, f"; resuming at step {run.step}" if run.saved is not None else "")


def optimizer_step(run: _Run, batches) -> tuple[torch.Tensor, int, int]:
    """One optimizer step: ``accumulation_steps`` micro-batches (no all-reduce but on the last),
    then unscale, clip, step, update. Returns (grad norm, real tokens, padded tokens)."""
    config, env, model = run.config, run.env, run.model
    tokens = padded = 0
    for micro_step in range(run.accum):
        with run.tracer.range("data_wait"):
            batch = next(batches)
        tokens += int(batch["attention_mask"].sum())
        padded += batch["attention_mask"].numel()
        batch = to_device(batch, env.device)
        syncing = micro_step == run.accum - 1 or not env.distributed
        with contextlib.nullcontext() if syncing else model.no_sync():
            with run.tracer.range("forward"), autocast_context(config.precision, env.device):
                loss = run.spec.loss(model(**batch), batch)
            with run.tracer.range("backward"):
                run.scaler.scale(loss / run.accum).backward()
        run.window.loss += loss.detach()
    with run.tracer.range("optimizer_step"):
        run.scaler.unscale_(run.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        run.optimizer.zero_grad(set_to_none=True)
        run.scheduler.step()
    return grad_norm, tokens, padded


def _after_step(run: _Run, grad_norm: torch.Tensor, tokens: int, padded: int) -> None:
    """Counters, throughput, and every ``log_every_n_steps`` a log record (TensorBoard, progress.json)."""
    config = run.config
    run.profiler.step()
    run.step += 1
    run.step_in_epoch += 1
    run.bar.update(1)
    run.window.add_step(tokens, padded)
    if run.step == run.first_step + 1:
        run.clock.reset()
        run.clock.start()
    else:
        run.measured += torch.tensor([1, tokens, padded], dtype=torch.float64)
    if run.step % config.log_every_n_steps == 0 or run.step == run.total_steps:
        record = run.window.flush(run.env, run.accum, config.global_batch_size)
        run.last_loss = record["loss"]
        run.loss_history.append({"step": run.step, "loss": run.last_loss})
        run.logger.scalars(run.step, {
            "train/loss": run.last_loss, "train/lr": run.scheduler.get_last_lr()[0],
            "train/grad_norm": grad_norm.item(),
            "train/loss_scale": run.scaler.get_scale() if run.scaler.is_enabled() else None,
            "train/sequences_per_second": record["sequences_per_second"],
            "train/tokens_per_second": record["tokens_per_second"],
            "train/padding_fraction": record["padding_fraction"],
        })
        run.bar.set_postfix(loss=f"{run.last_loss:.4f}", seq_s=f"{record['sequences_per_second']:.1f}", refresh=False)
        run.progress("train", sequences_per_second=record["sequences_per_second"])


def run_epoch(run: _Run) -> None:
    """The rest of the current epoch (or up to the step cap), checkpointing on the way and at its end."""
    config, env = run.config, run.env
    plan = plan_epoch(
        run.train_set, epoch=run.epoch, seed=config.seed, rank=env.rank, world_size=env.world_size,
        global_batch_size=config.global_batch_size, micro_batch_size=run.micro, accumulation_steps=run.accum,
        lengths=run.lengths, bucket_window_steps=config.bucket_window_steps,
    )
    steps_now = min(run.per_epoch - run.step_in_epoch, run.total_steps - run.step)
    plan = plan[run.step_in_epoch * run.accum : (run.step_in_epoch + steps_now) * run.accum]
    batches = iter(make_loader(run.train_set, plan, run.collate, config.num_workers, env.device.type == "cuda"))
    run.model.train()
    run.clock.start()
    for _ in range(steps_now):
        _after_step(run, *optimizer_step(run, batches))
        if (config.save_every_n_steps and run.step % config.save_every_n_steps == 0
                and run.step_in_epoch < run.per_epoch):
            save_checkpoint(run)
            run.clock.start()
    run.clock.stop()
    if run.step_in_epoch == run.per_epoch:
        run.epoch, run.step_in_epoch = run.epoch + 1, 0
        if run.eval_set is not None:
            evaluate_held_out(run)
            check_early_stopping(run)
    save_checkpoint(run)
    if run.eval_history and run.eval_history[-1]["step"] == run.step:
        # A sweep's trial: report, and stop here if pruned (TrialPruned); the last epoch has nothing left to save.
        run.trial.report(run.epoch, run.eval_history[-1],
                         may_prune=run.step < run.total_steps and run.stopped_early is None)


def check_early_stopping(run: _Run) -> None:
    """``--early-stopping-patience N``: mark the run stopped once N held-out evaluations in a row have
    not lowered the eval loss (the loop then ends; ``finish`` keeps the best epoch under ``--select-best``)."""
    patience = run.config.early_stopping_patience
    if patience is None or run.stopped_early is not None or evaluations_since_best(run.eval_history) < patience:
        return
    best = min(run.eval_history, key=lambda entry: entry["eval_loss"])
    run.stopped_early = {"epoch": run.epoch, "step": run.step, "patience": patience, "best_epoch": best["epoch"],
                         "best_eval_loss": best["eval_loss"]}
    if run.env.is_main:
        log.info("early stopping at epoch %d (step %d): no lower eval loss for %d evaluations (best: epoch %d, %.4f)",
                 run.epoch, run.step, patience, best["epoch"], best["eval_loss"])


def save_checkpoint(run: _Run) -> None:
    """``checkpoints/last.pt`` (rank 0), with every rank's RNG state; all ranks wait for it."""
    run.clock.stop()
    rng = all_gather_objects(ckpt.capture_rng_state(run.env.device), run.env)
    if run.env.is_main:
        ckpt.save_checkpoint(run.ckpt_file, {
            "schema_version": ckpt.SCHEMA_VERSION, "model": run.raw_model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "scaler": run.scaler.state_dict(), "step": run.step, "epoch": run.epoch,
            "step_in_epoch": run.step_in_epoch, "rng": rng, "world_size": run.env.world_size,
            "config": run.config.to_dict(),
            # JSON text: torch.load(weights_only=True) reads it back whatever the metric values' types
            "histories": json.dumps({"train_loss": run.loss_history, "eval": run.eval_history,
                                     "wall_seconds": run.wall_before + time.perf_counter() - run.started,
                                     "stopped_early": run.stopped_early}),
        })
    barrier(run.env)


def evaluate_held_out(run: _Run) -> None:
    """Score the eval features; with ``select_best``, keep these weights if their loss is the lowest yet."""
    run.progress("eval")
    metrics = evaluate(run.model, run.eval_set, run.spec, run.config, run.env, run.collate)
    run.eval_history.append({"epoch": run.epoch, "step": run.step, **metrics})
    run.logger.scalars(run.step, {f"eval/{k}": v for k, v in metrics.items() if k != "eval_rows"})
    if run.config.select_best and (run.best is None or metrics["eval_loss"] < run.best["eval_loss"]):
        # Every rank keeps the copy (they all load it at the end); rank 0 also writes it.
        run.best = {"schema_version": ckpt.SCHEMA_VERSION, "epoch": run.epoch, "step": run.step,
                    "eval_loss": metrics["eval_loss"],
                    "model": {k: v.detach().to("cpu", copy=True) for k, v in run.raw_model.state_dict().items()}}
        if run.env.is_main:
            ckpt.save_best(run.best_file, run.best)


def finish(run: _Run) -> dict:
    """Select and calibrate on the held-out split, then write the model and, last, ``metrics.json``."""
    config, env = run.config, run.env
    run.bar.close()
    if run.eval_set is not None and (not run.eval_history or run.eval_history[-1]["step"] != run.step):
        evaluate_held_out(run)  # a run capped by max_steps mid-epoch still reports eval metrics
    selected = calibration = None
    if run.best is not None:
        run.raw_model.load_state_dict(run.best["model"])
        selected = {"epoch": run.best["epoch"], "step": run.best["step"], "eval_loss": run.best["eval_loss"]}
        if env.is_main:
            log.info("selected epoch %d (step %d): lowest eval loss %.4f", selected["epoch"], selected["step"],
                     selected["eval_loss"])
    if config.calibrate:
        calibration = calibrate_temperature(run.model, run.eval_set, run.spec, config, env, run.collate)
        if env.is_main:
            log.info("calibrated: temperature %.3f, eval loss %.4f -> %.4f", calibration["temperature"],
                     calibration["eval_loss_before"], calibration["eval_loss_after"])
    metrics = {
        "task": config.task, "head": config.head, "precision": config.precision,
        "precision_choice": run.precision_choice,
        "world_size": env.world_size, "device": str(env.device), "steps": run.step, "epochs_completed": run.epoch,
        # --resume: the checkpoint's step (the histories below include the steps before it); None: a fresh run.
        "resumed_from_step": run.first_step if run.saved is not None else None,
        "global_batch_size": config.global_batch_size, "micro_batch_size": run.micro,
        "accumulation_steps": run.accum, "final_train_loss": run.last_loss, "train_loss_history": run.loss_history,
        "eval": run.eval_history, "final_eval": run.eval_history[-1] if run.eval_history else None,
        "selected": selected,  # select_best: the epoch whose weights were saved
        "stopped_early": run.stopped_early,  # early_stopping_patience: the epoch it stopped at, and the best one
        "calibration": calibration,  # calibrate: temperature and eval loss before / after
        "wall_seconds": run.wall_before + time.perf_counter() - run.started,  # with earlier processes' (--resume)
        "wall_seconds_this_process": time.perf_counter() - run.started,
        "throughput": _throughput(run),
    }
    if env.is_main:
        save_finetuned(run.raw_model, run.spec, run.folder.path, config.model_dir)
        run.progress("done")
        run.logger.close()
        write_json_atomic(run.folder.metrics, metrics)
    barrier(env)
    return metrics


def _throughput(run: _Run) -> dict:
    measured = all_reduce_sum(run.measured.to(run.env.device), run.env).cpu()
    steps = int(measured[0].item()) // run.env.world_size
    seconds = run.clock.seconds
    return {
        "steps": steps, "train_seconds": seconds,
        "sequences_per_second": steps * run.config.global_batch_size / seconds if seconds > 0 else None,
        "tokens_per_second": measured[1].item() / seconds if seconds > 0 else None,
        "padded_tokens_per_second": measured[2].item() / seconds if seconds > 0 else None,
        "padding_fraction": 1.0 - measured[1].item() / measured[2].item() if measured[2] else None,
        "note": "first step of this process excluded; eval and checkpoint time excluded",
    }


def train(config: TrainConfig, spec, env: DistEnv, profiler=None) -> dict:
    """Fine-tune per ``config`` on this process's share; returns the final metrics (every rank).

    ``spec`` is the task's :class:`tasks.spec.TrainSpec`, resolved by the entry point
    (``python -m train``, profiling); ``config.for_task(spec)`` has checked the config against it.

    Rank 0 writes ``OUT/model/``, ``OUT/head.safetensors``, ``OUT/train_config.json``,
    ``OUT/checkpoints/last.pt``, ``OUT/tb/``, ``OUT/progress.json`` and, last,
    ``OUT/metrics.json``. ``profiler`` is anything with ``step()`` (default: a no-op).
    """
    if config.world_size != env.world_size:
        raise ValueError(f"config.world_size {config.world_size} != launched world size {env.world_size}")
    requested = config.precision
    if config.model_dir is None:
        from prep.tokenizer import default_model_dir

        config = config.replace(model_dir=str(default_model_dir()))
    native_bf16 = env.device.type == "cpu" and cpu_has_native_bf16(unknown=False)
    precision, why = choose_precision(requested, env.device.type, native_bf16)
    config = config.replace(precision=precision)
    speed_up = config.fast_cpu and env.device.type == "cpu"
    with fast_cpu.keep_freed_memory() if speed_up else contextlib.nullcontext():
        run = setup(config.for_task(spec), spec, env, profiler,
                    precision_choice={"requested": requested, "chosen": precision, "why": why})
        while run.step < run.total_steps and run.stopped_early is None:
            run_epoch(run)
        return finish(run)
