"""One training process with a profiler plugged into the loop (what ``run_profile`` launches).

    python -m profiling.worker --backend torch --trace-dir OUT/traces --warmup-steps 3 \\
        --active-steps 5 -- --task gap --features F --out OUT/train --max-steps 9 --nvtx ...
    torchrun --nproc-per-node 2 -m profiling.worker ... -- <python -m train arguments>

Everything after ``--`` is parsed by ``python -m train``'s own parser, so the run is the same
training run; the only difference is the profiler object handed to :func:`train.loop.train`
(the loop already calls its ``step()`` after every optimizer step):

- ``torch``: a ``torch.profiler.profile`` that writes ``rank<R>.pt.trace.json`` and
  ``ops_rank<R>.json`` into ``--trace-dir``;
- ``cuda-range``: ``cudaProfilerStart``/``Stop`` around the window for ``nsys profile
  --capture-range=cudaProfilerApi`` (the process is expected to run under nsys).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

BACKENDS = ("torch", "cuda-range")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiling.worker", description=__doc__.split("\n\n")[0],
                                     allow_abbrev=False)
    parser.add_argument("--backend", required=True, choices=BACKENDS)
    parser.add_argument("--trace-dir", required=True, help="where the torch backend writes its traces")
    parser.add_argument("--warmup-steps", type=int, required=True, help="steps before the window")
    parser.add_argument("--active-steps", type=int, required=True, help="steps in the window")
    return parser


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    if "--" not in argv:
        raise SystemExit("python -m profiling.worker: put the training arguments after --")
    cut = argv.index("--")
    return argv[:cut], argv[cut + 1:]


def make_profiler(backend: str, trace_dir: str, rank: int, warmup_steps: int, active_steps: int, cuda: bool):
    if backend == "torch":
        from profiling.torch_trace import make_torch_profiler

        return make_torch_profiler(trace_dir, rank, warmup_steps, active_steps, cuda)
    if not cuda:
        raise ValueError("the cuda-range backend (nsys) needs a CUDA device")
    from profiling.nsys import CudaProfilerWindow

    return CudaProfilerWindow(warmup_steps, active_steps)


def main(argv: list[str] | None = None) -> int:
    own, train_args = split_argv(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(own)
    logging.basicConfig(
        level=logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from tasks import get_task
    from train.__main__ import build_parser as train_parser
    from train.__main__ import config_values, resolve_config
    from train.dist import init_distributed, shutdown_distributed
    from train.loop import train

    values = config_values(train_parser().parse_args(train_args))
    try:
        env = init_distributed(values.get("device", "auto"), os.environ)
        config = resolve_config(values, env.world_size, env.device.type)
        profiler = make_profiler(args.backend, args.trace_dir, env.rank, args.warmup_steps, args.active_steps,
                                 env.device.type == "cuda")
        with profiler:
            train(config, get_task(config.task).train, env, profiler=profiler)
    finally:
        shutdown_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
