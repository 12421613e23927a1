"""Where a CPU training step goes: torch.profiler's op table over a few steps of our loop.

    python -m bench.step_profile --task gap --precision bf16                    # with train/fast_cpu.py
    python -m bench.step_profile --task gap --precision bf16 --fast-cpu false   # the model's own modules
    python -m bench.step_profile --task squad --precision fp32 --json runs/bench/step_profile-squad.json

The packaged MiniLM (or ``--model``), batch 16, features as bench.train_throughput makes them (SQuAD
seq 384 from the first dev article, GAP development). ``--skip`` steps run unprofiled first (kernel
set-up for new shapes), then ``--steps`` are profiled. Prints the ops with the most self CPU time
and the run's sequences/s (profiler on, so below bench.train_throughput's figures); ``--json``
writes them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def profile_steps(task: str, features: Path, model_dir: Path, work: Path, precision: str, fast_cpu: bool,
                  attention_dropout: float | None, skip: int, steps: int, batch_size: int) -> tuple[dict, list[dict]]:
    """``(throughput, ops)``: the run's throughput record and its ops by self CPU time (ms per step),
    from the profiler and op table ``python -m profiling --backend torch`` uses."""
    from profiling.torch_trace import make_torch_profiler, ops_path, top_ops
    from tasks import get_task
    from train.config import TrainConfig
    from train.dist import single_process
    from train.loop import train

    spec = get_task(task).train
    out, traces = work / f"run-{task}", work / "traces"
    shutil.rmtree(out, ignore_errors=True)
    total = skip + 1 + steps
    profiler = make_torch_profiler(traces, 0, warmup_steps=skip + 1, active_steps=steps, cuda=False)
    config = TrainConfig(task=task, features_dir=str(features), run_dir=str(out), model_dir=str(model_dir),
                         head=spec.default_head, precision=precision, global_batch_size=batch_size,
                         max_steps=total, epochs=100, lr=3e-5, log_every_n_steps=total, save_every_n_steps=None,
                         progress_bar=False, device="cpu", attention_dropout=attention_dropout, fast_cpu=fast_cpu)
    with profiler:
        metrics = train(config, spec, single_process("cpu"), profiler=profiler)
    table = top_ops(ops_path(traces, 0), k=10 ** 9)
    whole = sum(op["self_ms_per_step"] for op in table)
    ops = [{"op": op["name"], "ms_per_step": op["self_ms_per_step"], "share": op["self_ms_per_step"] / whole,
            "calls_per_step": op["calls"] / steps} for op in table]
    return metrics["throughput"], ops


def main(argv: list[str] | None = None) -> int:
    from bench.train_throughput import prepare_features
    from prep.models import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=("squad", "gap"), default="gap")
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="auto")
    parser.add_argument("--fast-cpu", choices=("true", "false"), default="true")
    parser.add_argument("--attention-dropout", type=float, default=None, help="default: the model's own")
    parser.add_argument("--model", default=None, help="model folder or Hub id (default: the packaged MiniLM)")
    parser.add_argument("--global-batch-size", type=int, default=16)
    parser.add_argument("--skip", type=int, default=2, help="unprofiled steps first")
    parser.add_argument("--steps", type=int, default=4, help="profiled steps")
    parser.add_argument("--top", type=int, default=15, help="ops printed")
    parser.add_argument("--squad-json", default=str(SHARED_DATA / "squad" / "dev-v1.1.json"))
    parser.add_argument("--gap-tsv", default=str(SHARED_DATA / "gap" / "gap-development.tsv"))
    parser.add_argument("--json", default=None, help="write the throughput and every op here")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="bench-step-"))
    try:
        features = prepare_features(work, Path(args.squad_json), Path(args.gap_tsv), tasks=(args.task,))
        throughput, ops = profile_steps(args.task, features[args.task], resolve_model(args.model), work,
                                        args.precision, args.fast_cpu == "true", args.attention_dropout,
                                        args.skip, args.steps, args.global_batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{args.task}, precision {args.precision}, fast_cpu {args.fast_cpu}: "
          f"{throughput['sequences_per_second']:.2f} sequences/s with the profiler on")
    print(f"{'op':48} {'ms/step':>9} {'share':>7} {'calls/step':>10}")
    for op in ops[:args.top]:
        print(f"{op['op'][:48]:48} {op['ms_per_step']:>9.1f} {100 * op['share']:>6.1f}% {op['calls_per_step']:>10.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "throughput": throughput, "ops": ops}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
