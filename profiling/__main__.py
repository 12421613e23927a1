"""Profile a few steady-state training steps and time DDP scaling.

    # CPU (gloo) or one GPU; synthetic features sized for the run, the packaged MiniLM
    python -m profiling --task squad --world-size 2 --out runs/profile-squad
    # real features and model; nsys is used where nsys and CUDA exist (--backend torch to force torch.profiler)
    python -m profiling --task gap --features runs/features/gap-dev-<hash> --model runs/finetune-gap-.../model \
        --out runs/profile-gap --warmup-steps 3 --active-steps 5 --precision fp16 --scaling

Writes OUT/profile_summary.json (last), OUT/profile_summary.md, per-rank traces
(traces/rank<R>.pt.trace.json: Perfetto, chrome://tracing, TensorBoard) or Nsight reports
(rank<R>.nsys-rep + stats/*.csv), and the scaling runs' timings.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from profiling.config import BACKENDS
from train.config import DEVICES, PRECISIONS, TASKS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiling", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True, choices=TASKS)
    parser.add_argument("--out", required=True, help="artifact folder (replaced if it exists)")
    parser.add_argument("--features", default=None, help="prep output folder (default: synthetic features)")
    parser.add_argument("--model", default=None, help="BERT-family model folder (default: the packaged MiniLM)")
    parser.add_argument("--world-size", type=int, default=1, help="training processes (gloo on CPU, NCCL on GPUs)")
    parser.add_argument("--warmup-steps", type=int, default=3, help="steps before the recorded window")
    parser.add_argument("--active-steps", type=int, default=5, help="steps recorded")
    parser.add_argument("--precision", default="auto", choices=(*PRECISIONS, "auto"),
                        help="auto: fp16 on CUDA, fp32 on CPU")
    parser.add_argument("--global-batch-size", type=int, default=32)
    parser.add_argument("--per-device-batch-size", type=int, default=None)
    parser.add_argument("--head", default=None)
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="auto: nsys where nsys and CUDA exist, else torch.profiler")
    parser.add_argument("--device", default="auto", choices=DEVICES)
    scaling = parser.add_mutually_exclusive_group()
    scaling.add_argument("--scaling", dest="scaling", action="store_true", default=True,
                         help="also time world size 1 vs 2 with the same global batch (default)")
    scaling.add_argument("--no-scaling", dest="scaling", action="store_false")
    parser.add_argument("--synthetic-seq-length", type=int, default=128)
    parser.add_argument("--cpu-threads-per-process", type=int, default=None,
                        help="OMP threads per training process on CPU (default: CPUs / processes)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--prep-scaling-png", default="docs/benchmarks/prep_scaling.png",
                        help="bench/prep_scaling.py's plot, linked from the summary")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from prep.tokenizer import default_model_dir
    from profiling.config import ProfileConfig
    from profiling.run import run_profile

    try:
        config = ProfileConfig(
            task=args.task, model_dir=os.path.abspath(args.model or default_model_dir()),
            features_dir=os.path.abspath(args.features) if args.features else None,
            world_size=args.world_size, warmup_steps=args.warmup_steps, active_steps=args.active_steps,
            precision=args.precision, global_batch_size=args.global_batch_size,
            per_device_batch_size=args.per_device_batch_size, head=args.head, backend=args.backend,
            device=args.device, scaling=args.scaling, seed=args.seed,
            synthetic_seq_length=args.synthetic_seq_length, cpu_threads_per_process=args.cpu_threads_per_process,
            prep_scaling_png=args.prep_scaling_png or None,
        )
        summary = run_profile(config, args.out, progress=lambda message, percent: print(f"[{percent:3.0f}%] {message}",
                                                                                         file=sys.stderr))
    except (ValueError, FileNotFoundError) as err:
        print(f"python -m profiling: error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"step": summary["step"], "out": summary["artifact_dir"]}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
