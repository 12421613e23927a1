"""Fine-tune a BERT-family encoder on prep features, on one process or many.

    # one process (CPU, or one GPU)
    python -m train --task gap --features runs/gap-dev --eval-features runs/gap-val --out runs/ft-gap
    # a Hugging Face Hub id (fetched into its cache once) instead of the packaged MiniLM; a local folder also works
    python -m train --task gap --model bert-base-uncased --features runs/gap-dev --out runs/ft-gap-bert
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
import dataclasses
import logging
import os
import sys

from tasks import get_task, task_names
from train.checkpoint import CheckpointError
from prep.cli_args import add_dataclass_arguments, read_config_file, values_for
from prep.models import resolve_model
from train.config import TrainConfig
from train.trial import PRUNED_EXIT_CODE, TrialPruned


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """One flag per TrainConfig field (``--help`` lists them with the dataclass defaults). The
    namespace holds only the flags given: :func:`config_values` lays them over ``--config FILE.json``
    (a run's ``train_config.json``, or the file a Luigi task wrote), and the dataclass supplies the
    rest, so every default has one home. ``argv`` is accepted for callers that pass it."""
    parser = argparse.ArgumentParser(prog="python -m train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None, help="JSON object of TrainConfig fields (flags override it)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    add_dataclass_arguments(
        parser, TrainConfig, skip=("world_size",), typed_only=True,
        aliases={"features_dir": ["--features"], "run_dir": ["--out", "--out-dir"], "model_dir": ["--model"],
                 "eval_features_dir": ["--eval-features"]},
        negative_aliases={"length_bucketing": "--no-bucketing"},
        choices={"task": task_names()},
    )
    return parser


_REQUIRED_FLAGS = {"task": "--task", "features_dir": "--features", "run_dir": "--out"}


def config_values(args: argparse.Namespace) -> dict:
    """TrainConfig values: ``--config FILE`` (its TrainConfig fields; others, such as a recorded
    run's ``max_seq_length``, ignored), then the flags given; paths made absolute, and the model
    resolved to a local folder (a Hugging Face Hub id to its snapshot in the cache: prep.models)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in read_config_file(args.config).items() if k in names} if args.config else {}
    values.update(values_for(TrainConfig, args))
    missing = [flag for name, flag in _REQUIRED_FLAGS.items() if values.get(name) is None]
    if missing:
        raise ValueError(f"{', '.join(missing)} required (or a --config file that sets them)")
    for name in ("features_dir", "run_dir", "eval_features_dir"):
        if values.get(name):
            values[name] = os.path.abspath(values[name])
    if values.get("model_dir"):
        values["model_dir"] = os.path.abspath(resolve_model(values["model_dir"]))
    values.pop("world_size", None)  # the launcher's, never a file's
    return values


def resolve_config(values: dict, world_size: int, device_type: str = "cpu") -> TrainConfig:
    """The run's TrainConfig from :func:`config_values`, the packaged encoder filled in when no --model
    is given (looked up only then: a machine may lack it). Precision ``auto`` stays for the loop to
    resolve on the device it runs on (and record why)."""
    from prep.tokenizer import default_model_dir

    config = TrainConfig(**values, world_size=world_size)
    return config if config.model_dir else config.replace(model_dir=os.path.abspath(default_model_dir()))


def config_from_args(args: argparse.Namespace, world_size: int, device_type: str = "cpu") -> TrainConfig:
    return resolve_config(config_values(args), world_size, device_type)


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=args.log_level if os.environ.get("RANK", "0") == "0" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from train.dist import init_distributed, shutdown_distributed
    from train.loop import train

    try:
        values = config_values(args)
        env = init_distributed(values.get("device", "auto"), os.environ)
        config = resolve_config(values, env.world_size, env.device.type)
        train(config, get_task(config.task).train, env)
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
