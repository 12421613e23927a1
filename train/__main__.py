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
    # the settings of an earlier run, one changed
    python -m train --config runs/ft-squad/train_config.json --out runs/ft-squad-lr5 --lr 5e-5

Outputs under --out: model/ (encoder safetensors + config + tokenizer), head.safetensors,
train_config.json, checkpoints/last.pt, tb/, progress.json, metrics.json (written last).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from train.checkpoint import CheckpointError
from tasks import task_names
from train.cli_args import add_dataclass_arguments, config_file_defaults, values_for
from train.config import TrainConfig
from train.trial import PRUNED_EXIT_CODE, TrialPruned


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """One flag per TrainConfig field (``--help`` lists them with defaults); ``--config FILE.json``
    fills them first (a run's ``train_config.json`` works), flags override it."""
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="JSON object of TrainConfig fields (flags override it)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    add_dataclass_arguments(
        parser, TrainConfig, defaults=config_file_defaults(argv, TrainConfig), skip=("world_size",),
        aliases={"features_dir": ["--features"], "run_dir": ["--out", "--out-dir"], "model_dir": ["--model"],
                 "eval_features_dir": ["--eval-features"]},
        negative_aliases={"length_bucketing": "--no-bucketing"},
        choices={"task": task_names()},
    )
    return parser


def config_from_args(args: argparse.Namespace, world_size: int, device_type: str = "cpu") -> TrainConfig:
    """The run's TrainConfig: paths made absolute, precision ``auto`` and the default encoder resolved."""
    from prep.tokenizer import default_model_dir

    values = values_for(TrainConfig, args)
    for name in ("features_dir", "run_dir", "model_dir", "eval_features_dir"):
        if values.get(name):
            values[name] = os.path.abspath(values[name])
    config = TrainConfig(**{**values, "world_size": world_size})
    # The packaged model is looked up only when no --model is given: a machine may lack it.
    return config.resolved(device_type, None if config.model_dir else os.path.abspath(default_model_dir()))


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=args.log_level if os.environ.get("RANK", "0") == "0" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from train.dist import init_distributed, shutdown_distributed
    from train.loop import train

    try:
        env = init_distributed(args.device, os.environ)
        config = config_from_args(args, env.world_size, env.device.type)
        train(config, env)
    except TrialPruned as pruned:  # a sweep's verdict, not an error: the folder keeps its checkpoint
        print(f"python -m train: {pruned}", file=sys.stderr)
        return PRUNED_EXIT_CODE
    except (CheckpointError, FileNotFoundError, ValueError) as err:
        # Wrong input or state, not a bug: the message says what to change.
        print(f"python -m train: error: {err}", file=sys.stderr)
        return 2
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
