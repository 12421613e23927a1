"""The CUDA checks of bench/gpu_check.sh, in one process: throughput, MFU, GradScaler, a profile.

    bench/gpu_check.sh runs/gpu-check            # the way to run it (checks for a GPU first)
    python -m bench.gpu_check runs/gpu-check --steps 20 --batch-size 32

On the first visible GPU, with our training loop (train.loop.train) on full-length synthetic
SQuAD rows (seq 384):
- sequences/s, tokens/s and MFU in fp16 and bf16 for the packaged model (MiniLM) and for a
  BERT-base-size config (12 layers, hidden 768, random weights), MFU against the bf16 matmul
  peak measured on the same GPU (bench.train_throughput's FLOP count);
- the fp16 GradScaler path: finite losses, the scale it ended with, the steps it skipped;
- a profile of a few steps (``python -m profiling``: nsys if it is installed, else torch.profiler).

Writes OUT/gpu_check.json (last) and OUT/gpu_check.md. Untested on a GPU when written: no GPU
was lent to the project (the CPU-only stop of gpu_check.sh is what CI runs).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SEQ_LEN = 384


def full_length_features(work: Path, rows: int) -> Path:
    from tasks.squad.model import synthetic_squad_table
    from train.testing import write_feature_dir

    return write_feature_dir(work / "squad-full-384", synthetic_squad_table(rows, min_len=SEQ_LEN, max_len=SEQ_LEN),
                             "squad", "train", SEQ_LEN)


def throughput_rows(work: Path, models: dict[str, Path], features: Path, steps: int, batch_size: int,
                    peak_tflops: float, device: torch.device) -> list[dict]:
    """fp16 and bf16 runs of each model; the fp16 ones also report their GradScaler."""
    from transformers import BertConfig

    from bench.train_throughput import run_ours, training_flops_per_sequence
    from train.checkpoint import checkpoint_path, load_checkpoint
    from train.dist import single_process

    env = single_process(device)
    rows = []
    for label, model_dir in models.items():
        flops = training_flops_per_sequence(BertConfig.from_pretrained(str(model_dir)), SEQ_LEN)
        for precision in ("fp16", "bf16"):
            started = time.perf_counter()
            record = run_ours("squad", features, model_dir, batch_size, steps, precision, work, env)
            run_dir = work / f"ours-squad-{precision}-bucket"
            metrics = json.loads((run_dir / "metrics.json").read_text())
            losses = [entry["loss"] for entry in metrics["train_loss_history"]]
            record.update(model=label, precision=precision, seq_len=SEQ_LEN, batch=batch_size,
                          train_flops_per_sequence=flops,
                          mfu=record["sequences_per_second"] * flops / (peak_tflops * 1e12),
                          finite_losses=all(math.isfinite(loss) for loss in losses),
                          wall_s=round(time.perf_counter() - started, 1))
            if precision == "fp16":
                scaler = load_checkpoint(checkpoint_path(run_dir))["scaler"]
                record["grad_scaler"] = {"scale": scaler.get("scale"), "growth_tracker": scaler.get("_growth_tracker")}
            rows.append(record)
    return rows


def profile_steps(out: Path, steps: int, batch_size: int) -> dict:
    """A few profiled steps (nsys when found, else torch.profiler) by python -m profiling."""
    folder = out / "profile"
    command = [sys.executable, "-m", "profiling", "--task", "squad", "--out", str(folder), "--device", "cuda",
               "--precision", "fp16", "--warmup-steps", "2", "--active-steps", str(steps), "--global-batch-size",
               str(batch_size), "--synthetic-seq-length", str(SEQ_LEN), "--no-scaling"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    result = {"command": " ".join(command), "exit_code": done.returncode,
              "wall_s": round(time.perf_counter() - started, 1), "folder": str(folder)}
    summary = folder / "profile_summary.json"
    if done.returncode == 0 and summary.is_file():
        found = json.loads(summary.read_text())
        result.update(backend=found.get("backend"), notes=found.get("notes"))
    else:
        result["error_tail"] = done.stderr[-2000:]
    return result


def write_markdown(path: Path, results: dict) -> None:
    lines = [f"# GPU check: {results['device']}", "",
             f"torch {results['torch']}, CUDA {results['cuda']}; measured bf16 matmul peak "
             f"{results['bf16_peak_tflops_measured']:.0f} TFLOP/s; total {results['wall_s']:.0f} s", "",
             "| model | precision | seq | batch | seq/s | tok/s | MFU | finite losses | GradScaler scale |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in results["runs"]:
        scale = (row.get("grad_scaler") or {}).get("scale")
        lines.append(f"| {row['model']} | {row['precision']} | {row['seq_len']} | {row['batch']} | "
                     f"{row['sequences_per_second']:.0f} | {row['tokens_per_second']:.0f} | {100 * row['mfu']:.1f}% | "
                     f"{row['finite_losses']} | {'' if scale is None else f'{scale:g}'} |")
    profile = results["profile"]
    lines += ["", f"Profile ({profile.get('backend', 'failed')}): `{profile['command']}` -> {profile['folder']}"
              f" (exit {profile['exit_code']}, {profile['wall_s']} s)", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder for gpu_check.json, gpu_check.md and the profile")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per throughput run (first not timed)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    parser.add_argument("--profile-steps", type=int, default=3)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("python -m bench.gpu_check: no CUDA device visible to torch; nothing to check", file=sys.stderr)
        return 2
    from bench.train_throughput import bert_base_dir, measure_bf16_peak_tflops
    from prep.tokenizer import default_model_dir

    started = time.perf_counter()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        packaged = default_model_dir()
        models = {"packaged MiniLM": packaged, "bert-base size (random init)": bert_base_dir(work, packaged)}
        features = full_length_features(work, args.batch_size * (args.steps + 2))
        peak = measure_bf16_peak_tflops(device)
        print(f"bf16 matmul peak measured: {peak:.0f} TFLOP/s", file=sys.stderr)
        runs = throughput_rows(work, models, features, args.steps, args.batch_size, peak, device)
        profile = profile_steps(out, args.profile_steps, args.batch_size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    results = {"host": platform.node(), "device": torch.cuda.get_device_name(device), "torch": torch.__version__,
               "cuda": torch.version.cuda, "bf16_peak_tflops_measured": peak, "runs": runs, "profile": profile,
               "wall_s": round(time.perf_counter() - started, 1)}
    write_markdown(out / "gpu_check.md", results)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print((out / "gpu_check.md").read_text(encoding="utf-8"))
    ok = all(row["finite_losses"] for row in runs) and profile["exit_code"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
