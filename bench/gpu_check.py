"""The CUDA checks of bench/gpu_check.sh, in one process: throughput, MFU, GradScaler, a profile.

    bench/gpu_check.sh runs/gpu-check            # the way to run it (checks for a GPU first)
    python -m bench.gpu_check runs/gpu-check --steps 20 --batch-size 32

On the first visible GPU, with our training loop (train.loop.train) on full-length synthetic
SQuAD rows (seq 384):
- sequences/s, tokens/s and MFU in fp16 and bf16 for the packaged model (MiniLM) and for a
  BERT-base-size config (12 layers, hidden 768, random weights), MFU against the bf16 matmul
  peak measured on the same GPU and against the GPU's published dense peak (the usual
  convention; bench.train_throughput's FLOP count);
- the fp16 GradScaler path: finite losses, the scale it ended with, the steps it skipped
  (counted from AdamW's own step count);
- a profile of a few steps (``python -m profiling``: nsys if it is installed, else torch.profiler;
  torch.profiler again if the nsys run fails; a profile that fails or outlasts
  ``--profile-timeout-s`` is recorded as failed, with why, not raised).

``--model DIR`` measures another encoder folder than the packaged MiniLM (whose package the lent
GPU machine lacks: bench/device_run.sh passes the bundle's fp16 copy). Writes OUT/gpu_check.json
and OUT/gpu_check.md after the throughput runs and again after the profile. Untested on a GPU
when written: no GPU was lent to the project (the CPU-only stop of gpu_check.sh is what CI runs).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from prep.folders import RunFolder

SEQ_LEN = 384
# Dense (no sparsity) fp16 / bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets (half their
# "with sparsity" figures): the usual denominator of MFU. The first fragment found in the device's
# name wins, so the specific names come first.
PUBLISHED_DENSE_PEAK_TFLOPS = (
    ("H100 NVL", 835.5), ("H100 PCIe", 756.5), ("H200 NVL", 835.5), ("GH200", 989.4), ("H200", 989.4),
    ("H100", 989.4), ("A100", 312.0), ("L40S", 362.1), ("L4", 121.0),
)


def published_peak_tflops(device_name: str) -> float | None:
    """The data-sheet dense bf16 peak of a GPU named ``device_name`` (None: not in the table)."""
    return next((peak for fragment, peak in PUBLISHED_DENSE_PEAK_TFLOPS if fragment in device_name), None)


def full_length_features(work: Path, rows: int, seq_len: int = SEQ_LEN) -> Path:
    from tasks.squad.model import synthetic_squad_table
    from train.testing import write_feature_dir

    return write_feature_dir(work / f"squad-full-{seq_len}", synthetic_squad_table(rows, min_len=seq_len,
                                                                                   max_len=seq_len),
                             "squad", "train", seq_len)


def skipped_optimizer_steps(checkpoint: dict) -> int:
    """Optimizer steps the fp16 GradScaler skipped (inf / NaN gradients): the run's steps less the steps
    AdamW took, whose per-parameter step count does not advance on a skipped step."""
    state = checkpoint["optimizer"]["state"]
    taken = int(float(next(iter(state.values()))["step"])) if state else 0
    return checkpoint["step"] - taken


def throughput_row(label: str, model_dir: Path, features: Path, precision: str, batch_size: int, steps: int,
                   work: Path, env, peaks: dict, compile: bool = False, seq_len: int = SEQ_LEN) -> dict:
    """One timed run of our loop on full-length rows: sequences/s, MFU against ``peaks["measured"]``
    and ``peaks["published"]`` (TFLOP/s; None: unknown), finite losses, and in fp16 the GradScaler."""
    from transformers import BertConfig

    from bench.train_throughput import ours_run_dir, run_ours, training_flops_per_sequence
    from train.checkpoint import checkpoint_path, load_checkpoint

    flops = training_flops_per_sequence(BertConfig.from_pretrained(str(model_dir)), seq_len)
    started = time.perf_counter()
    record = run_ours("squad", features, model_dir, batch_size, steps, precision, work, env, compile=compile)
    run_dir = ours_run_dir(work, "squad", precision, compile=compile)
    metrics = json.loads(RunFolder(run_dir).metrics.read_text())
    losses = [entry["loss"] for entry in metrics["train_loss_history"]]
    achieved = (record["sequences_per_second"] or 0.0) * flops / 1e12
    record.update(model=label, precision=precision, compiled=compile, seq_len=seq_len, batch=batch_size,
                  train_flops_per_sequence=flops, model_tflops=achieved, mfu=achieved / peaks["measured"],
                  mfu_published=achieved / peaks["published"] if peaks.get("published") else None,
                  finite_losses=all(math.isfinite(loss) for loss in losses),
                  wall_s=round(time.perf_counter() - started, 1))
    if precision == "fp16":
        checkpoint = load_checkpoint(checkpoint_path(run_dir))
        scaler = checkpoint["scaler"]
        record["grad_scaler"] = {"scale": scaler.get("scale"), "growth_tracker": scaler.get("_growth_tracker"),
                                 "skipped_steps": skipped_optimizer_steps(checkpoint)}
    shutil.rmtree(run_dir, ignore_errors=True)
    return record


def throughput_rows(work: Path, models: dict[str, Path], features: Path, steps: int, batch_size: int,
                    peaks: dict, device: torch.device) -> list[dict]:
    """fp16 and bf16 runs of each model; the fp16 ones also report their GradScaler."""
    from train.dist import single_process

    env = single_process(device)
    return [throughput_row(label, model_dir, features, precision, batch_size, steps, work, env, peaks)
            for label, model_dir in models.items() for precision in ("fp16", "bf16")]


def profile_steps(folder: Path, model_dir: Path, steps: int, batch_size: int, timeout_s: float,
                  backends: tuple[str, ...] = ("auto", "torch"), seq_len: int = SEQ_LEN, device: str = "cuda",
                  warmup_steps: int = 2) -> dict:
    """A few profiled fp16 steps by ``python -m profiling``, each backend in turn until one writes its
    summary, all within ``timeout_s``. A failure is recorded (``ok`` False, each attempt's error), never raised."""
    from bench.children import run_group

    deadline = time.monotonic() + timeout_s
    attempts = []
    for backend in backends:
        left = deadline - time.monotonic()
        if left < 1:
            attempts.append({"backend": backend, "error": f"no time left to start it (a limit of {timeout_s:.0f} s)"})
            break
        command = [sys.executable, "-m", "profiling", "--task", "squad", "--out", str(folder), "--model",
                   str(model_dir), "--device", device, "--precision", "fp16", "--backend", backend,
                   "--warmup-steps", str(warmup_steps), "--active-steps", str(steps), "--global-batch-size",
                   str(batch_size), "--synthetic-seq-length", str(seq_len), "--no-scaling"]
        started = time.perf_counter()
        log = folder.parent / f"{folder.name}-{backend}.log"
        with open(log, "wb") as handle:
            code = run_group(command, left, handle)
        attempt = {"backend": backend, "command": " ".join(command), "exit_code": code,
                   "wall_s": round(time.perf_counter() - started, 1)}
        summary = folder / "profile_summary.json"
        if code == 0 and summary.is_file():
            found = json.loads(summary.read_text())
            return {**attempt, "ok": True, "folder": str(folder), "backend_used": found.get("backend"),
                    "notes": found.get("notes"), "step": found.get("step"), "failed_attempts": attempts}
        tail = log.read_text(encoding="utf-8", errors="replace")[-2000:]
        attempts.append({**attempt, "error": f"timed out after {left:.0f} s" if code is None else tail})
    return {"ok": False, "folder": str(folder), "failed_attempts": attempts,
            "error": "profile failed: " + "; ".join(f"{a['backend']}: {a['error'][-300:]}" for a in attempts)}


def _percent(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def throughput_table(rows: list[dict]) -> list[str]:
    """Markdown lines of throughput rows (a row with ``skipped`` says why instead of figures)."""
    lines = ["| model | precision | torch.compile | seq | batch | seq/s | tok/s | MFU (measured peak) | "
             "MFU (published peak) | finite losses | GradScaler scale | steps skipped |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        head = f"| {row['model']} | {row['precision']} | {'yes' if row.get('compiled') else 'no'} |"
        if "skipped" in row or "error" in row:
            lines.append(f"{head} {row.get('skipped') or 'failed: ' + row['error'][-200:]} |||||||||")
            continue
        scaler = row.get("grad_scaler") or {}
        scale = "" if scaler.get("scale") is None else f"{scaler['scale']:g}"
        lines.append(f"{head} {row['seq_len']} | {row['batch']} | {row['sequences_per_second']:.1f} | "
                     f"{row['tokens_per_second']:.0f} | {_percent(row['mfu'])} | {_percent(row['mfu_published'])} | "
                     f"{row['finite_losses']} | {scale} | {scaler.get('skipped_steps', '')} |")
    return lines


def write_markdown(path: Path, results: dict) -> None:
    published = results["bf16_peak_tflops_published"]
    lines = [f"# GPU check: {results['device']}", "",
             f"torch {results['torch']}, CUDA {results['cuda']}; bf16 matmul peak measured "
             f"{results['bf16_peak_tflops_measured']:.0f} TFLOP/s, published dense "
             f"{'unknown' if published is None else f'{published:g}'} TFLOP/s; total {results['wall_s']:.0f} s", "",
             *throughput_table(results["runs"])]
    profile = results.get("profile")
    if profile is not None:
        what = profile["backend_used"] if profile["ok"] else profile["error"]
        lines += ["", f"Profile ({what}) -> {profile['folder']}"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="folder for gpu_check.json, gpu_check.md and the profile")
    parser.add_argument("--model", default=None, help="encoder folder or Hub id (default: the packaged MiniLM)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per throughput run (first not timed)")
    parser.add_argument("--batch-size", type=int, default=32, help="sequences per step")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument("--profile-timeout-s", type=float, default=180.0,
                        help="the profile's wall-clock limit, fallback to torch.profiler included")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("python -m bench.gpu_check: no CUDA device visible to torch; nothing to check", file=sys.stderr)
        return 2
    from bench.train_throughput import bert_base_dir, measure_bf16_peak_tflops
    from prep.models import resolve_model

    started = time.perf_counter()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda", 0)
    torch.cuda.set_device(device)
    name = torch.cuda.get_device_name(device)
    model_dir = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    try:
        models = {f"{model_dir.name} ({'given' if args.model else 'packaged MiniLM'})": model_dir,
                  "bert-base size (random init)": bert_base_dir(work, model_dir)}
        features = full_length_features(work, args.batch_size * (args.steps + 2))
        peaks = {"measured": measure_bf16_peak_tflops(device), "published": published_peak_tflops(name)}
        print(f"bf16 matmul peak measured: {peaks['measured']:.0f} TFLOP/s", file=sys.stderr)
        results = {"host": platform.node(), "device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                   "bf16_peak_tflops_measured": peaks["measured"], "bf16_peak_tflops_published": peaks["published"],
                   "runs": throughput_rows(work, models, features, args.steps, args.batch_size, peaks, device),
                   "profile": None}
        _write_results(out, results, started)  # the throughput figures stay even if the profile hangs
        results["profile"] = profile_steps(out / "profile", model_dir, args.profile_steps, args.batch_size,
                                           args.profile_timeout_s)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _write_results(out, results, started)
    print((out / "gpu_check.md").read_text(encoding="utf-8"))
    ok = all(row["finite_losses"] for row in results["runs"]) and results["profile"]["ok"]
    return 0 if ok else 1


def _write_results(out: Path, results: dict, started: float) -> None:
    results["wall_s"] = round(time.perf_counter() - started, 1)
    write_markdown(out / "gpu_check.md", results)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
