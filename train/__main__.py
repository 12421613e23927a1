"""Fine-tune a BERT-family encoder on prep features, on one process or many.

    # one process (CPU, or one GPU)
    python -m train --task gap --features runs/gap-dev --eval-features runs/gap-val --out runs/ft-gap
    # one node, 4 GPUs (NCCL) or 4 CPU processes (gloo); the global batch stays 32
    torchrun --nproc-per-node 4 -m train --task squad --features runs/squad-train --out runs/ft-squad \
        --precision fp16 --global-batch-size 32 --epochs 2
    # two nodes: the same command on each, with torchrun's own flags
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d \
        --rdzv-endpoint host0:29500 -m train --task squad ...
    # continue a run that crashed or was killed
    python -m train ... --out runs/ft-squad --resume

Outputs under --out: model/ (encoder safetensors + config + tokenizer), head.safetensors,
train_config.json, checkpoints/last.pt, tb/, progress.json, metrics.json (written last).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from train.checkpoint import CheckpointError
from train.config import GAP_HEADS, PRECISIONS, SQUAD_HEAD, TASKS, DEVICES, TrainConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--features", required=True, help="prep output folder with the training features")
    parser.add_argument("--out", required=True, help="output folder (checkpoints, model, logs)")
    parser.add_argument("--model", default=None, help="local BERT-family model folder (default: the packaged MiniLM)")
    parser.add_argument("--eval-features", default=None, help="prep output evaluated at every epoch end")
    parser.add_argument("--select-best", action="store_true",
                        help="end on the epoch with the lowest --eval-features loss (kept in checkpoints/best.pt)")
    parser.add_argument("--calibrate", action="store_true",
                        help="GAP: fit a softmax temperature on --eval-features after training (lowers log loss, "
                             "keeps every prediction)")
    parser.add_argument("--head", default=None, choices=(*GAP_HEADS, SQUAD_HEAD),
                        help="GAP: concat | multiply (default) | segment; SQuAD: span")
    parser.add_argument("--precision", default="fp16", choices=(*PRECISIONS, "auto"),
                        help="fp16 (autocast + GradScaler), bf16, fp32, or auto: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--global-batch-size", type=int, default=32, help="sequences per optimizer step, all ranks")
    parser.add_argument("--per-device-batch-size", type=int, default=None,
                        help="sequences per forward pass (default: global / world size, at most 32)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many optimizer steps (never past --epochs)")
    parser.add_argument("--lr", type=float, default=3e-5)
    parser.add_argument("--warmup-ratio", type=float, default=0.1)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--max-grad-norm", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--no-bucketing", action="store_true", help="no length bucketing (batches in sampler order)")
    parser.add_argument("--bucket-window-steps", type=int, default=50)
    parser.add_argument("--pad-to-multiple-of", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=0, help="DataLoader worker processes (spawned)")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    parser.add_argument("--log-every-n-steps", type=int, default=10)
    parser.add_argument("--save-every-n-steps", type=int, default=200,
                        help="checkpoint interval (0: only at epoch ends and at the end)")
    parser.add_argument("--nvtx", action="store_true", help="NVTX / record_function ranges for profilers")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    parser.add_argument("--no-progress-bar", action="store_true")
    return parser


def config_from_args(args: argparse.Namespace, world_size: int, device_type: str = "cpu") -> TrainConfig:
    from prep.tokenizer import default_model_dir

    precision = args.precision
    if precision == "auto":  # CPUs without fp16 matmul units emulate it: slower than fp32
        precision = "fp16" if device_type == "cuda" else "fp32"
    return TrainConfig(
        task=args.task,
        features_dir=os.path.abspath(args.features),
        out_dir=os.path.abspath(args.out),
        model_dir=os.path.abspath(args.model or default_model_dir()),
        head=args.head or TrainConfig.default_head(args.task),
        eval_features_dir=os.path.abspath(args.eval_features) if args.eval_features else None,
        select_best=args.select_best,
        calibrate=args.calibrate,
        precision=precision,
        global_batch_size=args.global_batch_size,
        per_device_batch_size=args.per_device_batch_size,
        world_size=world_size,
        epochs=args.epochs,
        max_steps=args.max_steps,
        lr=args.lr,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm,
        seed=args.seed,
        length_bucketing=not args.no_bucketing,
        bucket_window_steps=args.bucket_window_steps,
        pad_to_multiple_of=args.pad_to_multiple_of,
        num_workers=args.num_workers,
        device=args.device,
        log_every_n_steps=args.log_every_n_steps,
        save_every_n_steps=args.save_every_n_steps or None,
        nvtx=args.nvtx,
        resume=args.resume,
        progress_bar=not args.no_progress_bar,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from train.dist import init_distributed, shutdown_distributed
    from train.loop import train

    try:
        env = init_distributed(args.device, os.environ)
        config = config_from_args(args, env.world_size, env.device.type)
        train(config, env)
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        # Wrong input or state, not a bug: the message says what to change.
        print(f"python -m train: error: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
