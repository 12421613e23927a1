"""Profile a few steady-state training steps and time DDP scaling.

    # CPU (gloo) or one GPU; synthetic features sized for the run, the packaged MiniLM
    python -m profiling --task squad --world-size 2 --out runs/profile-squad
    # real features and model; nsys is used where nsys and CUDA exist (--backend torch to force torch.profiler)
    python -m profiling --task gap --features runs/features/gap-dev-<hash> --model runs/finetune-gap-.../model \
        --out runs/profile-gap --warmup-steps 3 --active-steps 5 --precision fp16 --scaling

Writes OUT/profile_summary.json (last), OUT/profile_summary.md, per-rank traces
(traces/rank<R>.pt.trace.json: open in Perfetto or chrome://tracing) or Nsight reports
(rank<R>.nsys-rep + stats/*.csv), and the scaling runs' timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from profiling.config import BACKENDS, ProfileConfig
from prep.cli_args import add_dataclass_arguments, config_file_defaults, values_for
from tasks import task_names
from train.config import DEVICES, PRECISIONS


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """One flag per ProfileConfig field (``--config FILE.json`` first, flags override it)."""
    parser = argparse.ArgumentParser(prog="python -m profiling", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", "--out-dir", dest="out_dir", required=True, help="artifact folder (replaced if it exists)")
    parser.add_argument("--config", default=None, help="JSON object of ProfileConfig fields (flags override it)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    add_dataclass_arguments(
        parser, ProfileConfig, defaults={"model_dir": None, **config_file_defaults(argv, ProfileConfig)},
        aliases={"features_dir": ["--features"], "model_dir": ["--model"]},
        choices={"task": task_names(), "precision": (*PRECISIONS, "auto"), "backend": BACKENDS, "device": DEVICES},
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from prep.models import resolve_model
    from profiling.run import run_profile
    from tasks import get_task

    try:
        values = values_for(ProfileConfig, args)
        values["model_dir"] = os.path.abspath(resolve_model(values["model_dir"]))  # a Hub id: its cached snapshot
        if values["features_dir"]:
            values["features_dir"] = os.path.abspath(values["features_dir"])
        values["prep_scaling_png"] = values["prep_scaling_png"] or None
        config = ProfileConfig(**values)
        summary = run_profile(config, get_task(config.task).train, args.out_dir, progress=lambda message, percent: print(
            f"[{percent:3.0f}%] {message}", file=sys.stderr))
    except (ValueError, FileNotFoundError) as err:
        print(f"python -m profiling: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"step": summary["step"], "out": summary["artifact_dir"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
