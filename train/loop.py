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
import logging
import math
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from train import checkpoint as ckpt
from train.config import TrainConfig
from train.data import FeatureSet, make_collate, make_loader, plan_epoch, steps_per_epoch
from train.dist import DistEnv, all_gather_objects, all_reduce_sum, barrier, to_device
from train.metrics_log import METRICS_FILE, RunLogger, TrainClock, write_json_atomic
from train.evaluation import calibrate_temperature, evaluate
from tasks import get_task
from train.model import TRAIN_CONFIG_FILE, autocast_context, build_model, save_finetuned
from train.tracing import NullProfiler, Tracer

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def linear_warmup_decay(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR multiplier: 0 -> 1 over ``warmup_steps``, then linearly down to 0 at ``total_steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


def make_optimizer(model: torch.nn.Module, config: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW, no weight decay on biases, LayerNorm weights and other vectors.

    Fused kernels on CUDA, and on CPU where torch has them (2.4+; what the HF Trainer uses by
    default too): one kernel per step instead of a chain of per-tensor ops.
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            (decay if param.ndim >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    fused = device.type == "cuda" or (device.type == "cpu" and _torch_at_least(2, 4))
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2), eps=config.adam_eps, fused=fused,
    )


def _torch_at_least(major: int, minor: int) -> bool:
    found = tuple(int(part) for part in torch.__version__.split("+")[0].split(".")[:2])
    return found >= (major, minor)


def _no_buffer_sync() -> dict:
    """BERT's buffers (position / token-type ids) are constants: no need to sync them every forward."""
    import inspect

    if "forward_sync_buffers" in inspect.signature(DDP.__init__).parameters:  # torch >= 2.13
        return {"forward_sync_buffers": False}
    return {"broadcast_buffers": False}


def total_train_steps(config: TrainConfig, num_rows: int) -> int:
    per_epoch = steps_per_epoch(num_rows, config.global_batch_size)
    if per_epoch == 0:
        raise ValueError(f"{num_rows} training rows cannot fill one global batch of {config.global_batch_size}")
    total = per_epoch * config.epochs
    return min(total, config.max_steps) if config.max_steps else total


class _Window:
    """Loss and token counts since the last log line; ``flush`` all-reduces them over ranks."""

    def __init__(self, device: torch.device):
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.loss = torch.zeros((), dtype=torch.float32, device=self.device)
        self.tokens = self.padded = self.steps = 0
        self.started = time.perf_counter()

    def add_step(self, tokens: int, padded: int) -> None:
        self.tokens += tokens
        self.padded += padded
        self.steps += 1

    def flush(self, env: DistEnv, accum: int, global_batch_size: int) -> dict:
        stats = torch.tensor([self.loss.item(), self.tokens, self.padded], dtype=torch.float64, device=self.device)
        all_reduce_sum(stats, env)
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        record = {
            "loss": stats[0].item() / (self.steps * accum * env.world_size),
            "sequences_per_second": self.steps * global_batch_size / elapsed,
            "tokens_per_second": stats[1].item() / elapsed,
            "padding_fraction": 1.0 - stats[1].item() / max(stats[2].item(), 1.0),
        }
        self._reset()
        return record


def write_train_config(config: TrainConfig, dataset: FeatureSet, env: DistEnv) -> dict:
    record = {
        **config.to_dict(),
        "model_dir": str(Path(config.model_dir).resolve()),
        "features_dir": str(Path(config.features_dir).resolve()),
        "max_seq_length": dataset.max_seq_length,
        "micro_batch_size": config.micro_batch_size(),
        "accumulation_steps": config.accumulation_steps(),
        "tokenizer": dataset.manifest.get("tokenizer"),
        "schema_version": ckpt.SCHEMA_VERSION,
    }
    if env.is_main:
        write_json_atomic(Path(config.out_dir) / TRAIN_CONFIG_FILE, record)
    return record


def train(config: TrainConfig, env: DistEnv, profiler=None) -> dict:
    """Fine-tune per ``config`` on this process's share; returns the final metrics (every rank).

    Rank 0 writes ``OUT/model/``, ``OUT/head.safetensors``, ``OUT/train_config.json``,
    ``OUT/checkpoints/last.pt``, ``OUT/tb/``, ``OUT/progress.json`` and, last,
    ``OUT/metrics.json``. ``profiler`` is anything with ``step()`` (default: a no-op).
    """
    if config.world_size != env.world_size:
        raise ValueError(f"config.world_size {config.world_size} != launched world size {env.world_size}")
    if config.precision == "auto" or config.model_dir is None:
        from prep.tokenizer import default_model_dir

        config = config.resolved(env.device.type, str(default_model_dir()))
    profiler = profiler or NullProfiler()
    task = get_task(config.task)
    out_dir = Path(config.out_dir)
    ckpt_file = ckpt.checkpoint_path(out_dir)
    saved = None
    if config.resume:
        saved = ckpt.load_checkpoint(ckpt_file)
        ckpt.check_compatible(saved["config"], config.run_defining(), ckpt_file)
    elif ckpt_file.exists():
        raise ckpt.CheckpointError(f"{ckpt_file} exists: pass --resume to continue that run, or use a new --out")

    train_set = FeatureSet(config.features_dir, config.task)
    eval_set = FeatureSet(config.eval_features_dir, config.task) if config.eval_features_dir else None
    lengths = train_set.lengths() if config.length_bucketing else None
    per_epoch = steps_per_epoch(len(train_set), config.global_batch_size)
    total_steps = total_train_steps(config, len(train_set))
    accum, micro = config.accumulation_steps(), config.micro_batch_size()
    if env.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    write_train_config(config, train_set, env)

    seed_everything(config.seed)  # identical head init on every rank
    raw_model = build_model(config.task, config.head, config.model_dir).to(env.device)
    pad_id = raw_model.encoder.config.pad_token_id or 0
    collate = make_collate(config.task, pad_id, config.pad_to_multiple_of)
    optimizer = make_optimizer(raw_model, config, env.device)
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, functools.partial(linear_warmup_decay, warmup_steps=warmup_steps, total_steps=total_steps)
    )
    scaler = torch.amp.GradScaler(env.device.type, enabled=config.precision == "fp16")

    step, epoch, step_in_epoch = 0, 0, 0
    if saved is not None:
        raw_model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if saved["scaler"]:
            scaler.load_state_dict(saved["scaler"])
        step, epoch, step_in_epoch = saved["step"], saved["epoch"], saved["step_in_epoch"]
    model = raw_model
    if env.distributed:
        model = DDP(raw_model, device_ids=[env.local_rank] if env.device.type == "cuda" else None,
                    gradient_as_bucket_view=True, **_no_buffer_sync())
    if saved is not None and saved["world_size"] == env.world_size:
        ckpt.restore_rng_state(saved["rng"][env.rank], env.device)
    else:
        if saved is not None and env.is_main:
            log.warning("resuming at world size %d from a checkpoint of world size %d: same batches, "
                        "but dropout draws differ from the unbroken run", env.world_size, saved["world_size"])
        seed_everything(config.seed + env.rank + 1_000_003 * step)  # per-rank dropout streams
    if env.is_main and config.precision == "fp16" and env.device.type == "cpu":
        log.warning("fp16 on CPU: autocast float16 + GradScaler work, but most CPUs emulate fp16 matmuls "
                    "(several times slower than fp32); use --precision bf16/fp32/auto for speed")
    if env.is_main:
        log.info("%s/%s on %s x%d (%s): global batch %d = %d per device x %d accumulation x %d ranks; "
                 "%d steps (%d per epoch)%s", config.task, config.head, env.device.type, env.world_size,
                 config.precision, config.global_batch_size, micro, accum, env.world_size, total_steps, per_epoch,
                 f"; resuming at step {step}" if saved is not None else "")

    logger = RunLogger(out_dir, enabled=env.is_main)
    tracer = Tracer(config.nvtx, env.device)
    clock = TrainClock(env.device)
    bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True,
               disable=not (env.is_main and config.progress_bar))
    loss_history, eval_history = [], []
    # Throughput counts this process's steps after its first (allocator and kernel warm-up).
    measured = torch.zeros(3, dtype=torch.float64)  # steps, real tokens, padded tokens (this rank)
    window = _Window(env.device)
    first_step = step
    started = time.perf_counter()
    last_loss = None
    best_file = ckpt.best_path(out_dir)
    best = ckpt.load_best(best_file) if config.select_best and saved is not None else None

    def save(epoch_now: int, step_in_epoch_now: int) -> None:
        clock.stop()
        rng = all_gather_objects(ckpt.capture_rng_state(env.device), env)
        if env.is_main:
            ckpt.save_checkpoint(ckpt_file, {
                "schema_version": ckpt.SCHEMA_VERSION, "model": raw_model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "step": step, "epoch": epoch_now,
                "step_in_epoch": step_in_epoch_now, "rng": rng, "world_size": env.world_size, "config": config.to_dict(),
            })
        barrier(env)

    def run_eval() -> None:
        nonlocal best
        logger.progress({"phase": "eval", "step": step, "total_steps": total_steps, "epoch": epoch,
                         "epochs": config.epochs, "loss": last_loss})
        metrics = evaluate(model, eval_set, config, env, collate)
        eval_history.append({"epoch": epoch, "step": step, **metrics})
        logger.scalars(step, {f"eval/{k}": v for k, v in metrics.items() if k != "eval_rows"})
        if config.select_best and (best is None or metrics["eval_loss"] < best["eval_loss"]):
            # Every rank keeps the copy (they all load it at the end); rank 0 also writes it.
            best = {"schema_version": ckpt.SCHEMA_VERSION, "epoch": epoch, "step": step,
                    "eval_loss": metrics["eval_loss"],
                    "model": {k: v.detach().to("cpu", copy=True) for k, v in raw_model.state_dict().items()}}
            if env.is_main:
                ckpt.save_best(best_file, best)

    while step < total_steps:
        plan = plan_epoch(
            train_set, epoch=epoch, seed=config.seed, rank=env.rank, world_size=env.world_size,
            global_batch_size=config.global_batch_size, micro_batch_size=micro, accumulation_steps=accum,
            lengths=lengths, bucket_window_steps=config.bucket_window_steps,
        )
        steps_now = min(per_epoch - step_in_epoch, total_steps - step)
        plan = plan[step_in_epoch * accum : (step_in_epoch + steps_now) * accum]
        batches = iter(make_loader(train_set, plan, collate, config.num_workers, env.device.type == "cuda"))
        model.train()
        clock.start()
        for _ in range(steps_now):
            tokens = padded = 0
            for micro_step in range(accum):
                with tracer.range("data_wait"):
                    batch = next(batches)
                tokens += int(batch["attention_mask"].sum())
                padded += batch["attention_mask"].numel()
                batch = to_device(batch, env.device)
                syncing = micro_step == accum - 1 or not env.distributed
                with contextlib.nullcontext() if syncing else model.no_sync():
                    with tracer.range("forward"), autocast_context(config.precision, env.device):
                        loss = task.loss(model(**batch), batch)
                    with tracer.range("backward"):
                        scaler.scale(loss / accum).backward()
                window.loss += loss.detach()
            with tracer.range("optimizer_step"):
                scaler.unscale_(optimizer)
                grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                scheduler.step()
            profiler.step()
            step += 1
            step_in_epoch += 1
            bar.update(1)
            window.add_step(tokens, padded)
            if step == first_step + 1:
                clock.reset()
                clock.start()
            else:
                measured += torch.tensor([1, tokens, padded], dtype=torch.float64)
            if step % config.log_every_n_steps == 0 or step == total_steps:
                record = window.flush(env, accum, config.global_batch_size)
                last_loss = record["loss"]
                loss_history.append({"step": step, "loss": last_loss})
                logger.scalars(step, {
                    "train/loss": last_loss, "train/lr": scheduler.get_last_lr()[0],
                    "train/grad_norm": grad_norm.item(),
                    "train/loss_scale": scaler.get_scale() if scaler.is_enabled() else None,
                    "train/sequences_per_second": record["sequences_per_second"],
                    "train/tokens_per_second": record["tokens_per_second"],
                    "train/padding_fraction": record["padding_fraction"],
                })
                bar.set_postfix(loss=f"{last_loss:.4f}", seq_s=f"{record['sequences_per_second']:.1f}", refresh=False)
                logger.progress({"phase": "train", "step": step, "total_steps": total_steps, "epoch": epoch,
                                 "epochs": config.epochs, "loss": last_loss,
                                 "sequences_per_second": record["sequences_per_second"]})
            if config.save_every_n_steps and step % config.save_every_n_steps == 0 and step_in_epoch < per_epoch:
                save(epoch, step_in_epoch)
                clock.start()
        clock.stop()
        if step_in_epoch == per_epoch:
            epoch, step_in_epoch = epoch + 1, 0
            if eval_set is not None:
                run_eval()
        save(epoch, step_in_epoch)
    bar.close()
    if eval_set is not None and (not eval_history or eval_history[-1]["step"] != step):
        run_eval()  # a run capped by max_steps mid-epoch still reports eval metrics
    selected = calibration = None
    if best is not None:
        raw_model.load_state_dict(best["model"])
        selected = {"epoch": best["epoch"], "step": best["step"], "eval_loss": best["eval_loss"]}
        if env.is_main:
            log.info("selected epoch %d (step %d): lowest eval loss %.4f", best["epoch"], best["step"],
                     best["eval_loss"])
    if config.calibrate:
        calibration = calibrate_temperature(model, eval_set, config, env, collate)
        if env.is_main:
            log.info("calibrated: temperature %.3f, eval loss %.4f -> %.4f", calibration["temperature"],
                     calibration["eval_loss_before"], calibration["eval_loss_after"])
    measured = all_reduce_sum(measured.to(env.device), env).cpu()
    steps_measured = int(measured[0].item()) // env.world_size
    train_seconds = clock.seconds
    metrics = {
        "task": config.task, "head": config.head, "precision": config.precision,
        "world_size": env.world_size, "device": str(env.device), "steps": step, "epochs_completed": epoch,
        # --resume: the checkpoint's step (the histories below start after it); None: a fresh run.
        "resumed_from_step": first_step if saved is not None else None,
        "global_batch_size": config.global_batch_size, "micro_batch_size": micro, "accumulation_steps": accum,
        "final_train_loss": last_loss, "train_loss_history": loss_history, "eval": eval_history,
        "final_eval": eval_history[-1] if eval_history else None,
        "selected": selected,  # select_best: the epoch whose weights were saved
        "calibration": calibration,  # calibrate: temperature and eval loss before / after
        "wall_seconds": time.perf_counter() - started,
        "throughput": {
            "steps": steps_measured, "train_seconds": train_seconds,
            "sequences_per_second": steps_measured * config.global_batch_size / train_seconds if train_seconds > 0 else None,
            "tokens_per_second": measured[1].item() / train_seconds if train_seconds > 0 else None,
            "padded_tokens_per_second": measured[2].item() / train_seconds if train_seconds > 0 else None,
            "padding_fraction": 1.0 - measured[1].item() / measured[2].item() if measured[2] else None,
            "note": "first step of this process excluded; eval and checkpoint time excluded",
        },
    }
    if env.is_main:
        save_finetuned(raw_model, out_dir, config.model_dir)
        logger.progress({"phase": "done", "step": step, "total_steps": total_steps, "epoch": epoch,
                         "epochs": config.epochs, "loss": last_loss})
        logger.close()
        write_json_atomic(out_dir / METRICS_FILE, metrics)
    barrier(env)
    return metrics
