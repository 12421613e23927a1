"""Training throughput: our loop vs the Hugging Face Trainer (CPU), and fp16/bf16 MFU (CUDA).

    python -m bench.train_throughput                      # CPU: packaged MiniLM, SQuAD seq 384 + GAP
    python -m bench.train_throughput --steps 4 --global-batch-size 8   # a quick look
    python -m bench.train_throughput --json docs/benchmarks/train_throughput-h100.json  # on a GPU box

CPU part: the same model (encoder + our head), the same prep features and the same batch size,
trained for ``--steps`` optimizer steps by
- ``ours``: :func:`train.loop.train` (dynamic padding + length bucketing, and on CPU the speed-ups
  of :mod:`train.fast_cpu`: cheaper dropout masks, matmul attention, freed memory kept);
- ``ours/stock-modules``: the same loop with ``fast_cpu=False`` (the model's own dropout and SDPA,
  the default allocator), so the table tells the loop's gain from the speed-ups';
- ``trainer/max_length``: ``transformers.Trainer`` fed batches padded to ``max_seq_length``
  (the padding of HF's ``run_qa.py`` example by default, ``pad_to_max_length=True``);
- ``trainer/dynamic``: ``transformers.Trainer`` fed batches padded to their longest row
  (what ``DataCollatorWithPadding`` does).
The Trainer trains the model's own modules. Every run has a fresh process. Sequences/s and
tokens/s (real, non-pad tokens) leave out each run's first step; with ``--passes 2`` the whole
comparison runs twice and the last pass is reported.

CUDA part (only when a GPU is visible): a BERT-base-sized random config at seq 384 (every row
full length), fp16 and bf16, our loop; model FLOPs utilisation against the bf16 matmul peak
measured on the same GPU. Training FLOPs per sequence are ``6 * N * T + 12 * L * H * T^2``
(N: non-embedding parameters, L layers, H hidden, T tokens).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from train.config import TrainConfig
from train.data import FeatureSet, make_collate
from train.dist import DistEnv, single_process
from train.loop import train
from tasks import get_task
from train.model import build_model

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def prepare_features(work: Path, squad_json: Path, gap_tsv: Path, tasks: tuple[str, ...] = ("squad", "gap")) -> dict[str, Path]:
    """SQuAD (seq 384) features from the first article of ``squad_json``; GAP features from ``gap_tsv``
    (those of ``tasks``)."""
    from tasks.gap.prep import GapPrepConfig, prepare_gap
    from tasks.squad.prep import SquadPrepConfig, prepare_squad

    features = {}
    if "squad" in tasks:
        data = json.loads(squad_json.read_text())
        data["data"] = data["data"][:1]
        small = work / "squad-first-article.json"
        small.write_text(json.dumps(data))
        features["squad"] = work / "squad-train"
        prepare_squad(small, features["squad"], None, SquadPrepConfig(max_seq_length=384, split="train"), nproc=1)
    if "gap" in tasks:
        features["gap"] = work / "gap-train"
        prepare_gap(gap_tsv, features["gap"], None, GapPrepConfig(max_seq_length=256), nproc=1)
    return features


class _LossModule(torch.nn.Module):
    """Our model behind the Trainer's interface (returns {"loss"}); counts real tokens in training."""

    def __init__(self, model, loss):
        super().__init__()
        self.model, self.loss = model, loss
        self.real_tokens = 0

    def forward(self, **batch):
        batch.pop("num_items_in_batch", None)
        if self.training:
            self.real_tokens += int(batch["attention_mask"].sum())
        return {"loss": self.loss(self.model(**batch), batch)}


def run_trainer(task: str, features: Path, model_dir: Path, batch_size: int, steps: int, padding: str,
                precision: str, work: Path, attention_dropout: float | None = None) -> dict:
    from transformers import Trainer, TrainerCallback, TrainingArguments

    spec = get_task(task).train
    dataset = FeatureSet(features, task)
    pad_to = dataset.max_seq_length if padding == "max_length" else 1
    collate = make_collate(spec, 0, pad_to)
    torch.manual_seed(0)
    module = _LossModule(build_model(spec, spec.default_head, model_dir, attention_dropout=attention_dropout), spec.loss)
    marks: list[tuple[float, int]] = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            marks.append((time.perf_counter(), module.real_tokens))

    args = TrainingArguments(
        output_dir=str(work / f"trainer-{task}-{padding}"), per_device_train_batch_size=batch_size,
        max_steps=steps, learning_rate=3e-5, lr_scheduler_type="linear", weight_decay=0.01, max_grad_norm=1.0,
        save_strategy="no", logging_strategy="no", report_to=[], disable_tqdm=True, remove_unused_columns=False,
        dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), seed=0,
        bf16=precision == "bf16", fp16=precision == "fp16",
    )
    trainer = Trainer(model=module, args=args, train_dataset=dataset, data_collator=collate, callbacks=[Clock()])
    trainer.train()
    (t0, tok0), (t1, tok1) = marks[0], marks[-1]
    measured = len(marks) - 1
    return {"runner": f"trainer/{padding}", "steps_measured": measured,
            "sequences_per_second": measured * batch_size / (t1 - t0), "tokens_per_second": (tok1 - tok0) / (t1 - t0)}


def ours_run_dir(work: Path, task: str, precision: str, bucketing: bool = True, compile: bool = False) -> Path:
    """The run folder :func:`run_ours` trains in (replaced by each run)."""
    return work / f"ours-{task}-{precision}-{'bucket' if bucketing else 'plain'}{'-compiled' if compile else ''}"


def run_ours(task: str, features: Path, model_dir: Path, batch_size: int, steps: int, precision: str,
             work: Path, env: DistEnv, bucketing: bool = True, per_device: int | None = None,
             compile: bool = False, attention_dropout: float | None = None, fast_cpu: bool = True) -> dict:
    out = ours_run_dir(work, task, precision, bucketing, compile)
    shutil.rmtree(out, ignore_errors=True)
    spec = get_task(task).train
    config = TrainConfig(task=task, features_dir=str(features), run_dir=str(out), model_dir=str(model_dir),
                         head=spec.default_head, precision=precision, global_batch_size=batch_size,
                         per_device_batch_size=per_device, max_steps=steps, epochs=100, lr=3e-5,
                         length_bucketing=bucketing, log_every_n_steps=max(steps, 1), save_every_n_steps=None,
                         progress_bar=False, device=env.device.type, compile=compile,
                         attention_dropout=attention_dropout, fast_cpu=fast_cpu)
    metrics = train(config, spec, env)
    throughput = metrics["throughput"]
    runner = "ours" + ("" if bucketing else "/no-bucketing") + ("" if fast_cpu or env.device.type != "cpu" else "/stock-modules")
    return {"runner": runner, "steps_measured": throughput["steps"],
            "sequences_per_second": throughput["sequences_per_second"],
            "tokens_per_second": throughput["tokens_per_second"],
            "padding_fraction": throughput["padding_fraction"]}


def in_fresh_process(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a new (spawned) Python process: no runner inherits another's
    allocator state, warm caches or process-wide settings (ours sets glibc's malloc while it trains)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(function, *args, **kwargs).result()


def measure_bf16_peak_tflops(device: torch.device, size: int = 8192, repeats: int = 20,
                             dtype: torch.dtype = torch.bfloat16) -> float:
    """TFLOP/s of ``size``-square matrix products (``dtype``: the CPU dry run of the GPU run uses float32)."""
    def wait() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    wait()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    wait()
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e12


def bert_base_dir(work: Path, tokenizer_dir: Path) -> Path:
    from train.testing import make_tiny_model_dir

    return make_tiny_model_dir(work / "bert-base-random", tokenizer_dir, hidden_size=768, num_hidden_layers=12,
                               num_attention_heads=12, intermediate_size=3072)


def training_flops_per_sequence(config, seq_len: int) -> float:
    hidden, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    per_layer = 4 * hidden * hidden + 2 * hidden * inter  # attention projections + MLP weights
    params = layers * per_layer + 2 * hidden  # + the span head
    return 6 * params * seq_len + 12 * layers * hidden * seq_len**2


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_section(args, model_dir: Path, work: Path) -> dict:
    """Ours against the Trainer (padded to max_length, and dynamically) per task and per variant
    (precision x attention dropout, the same settings for every runner of a variant), with each row's
    useful TFLOP/s and its share of this CPU's matmul peak in that precision, measured in this run."""
    from transformers import AutoConfig

    from train.model import cpu_has_native_bf16

    cpu = single_process("cpu")
    native = cpu_has_native_bf16(unknown=False)
    variants = parse_variants(args.variants, native)
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {precision: measure_bf16_peak_tflops(torch.device("cpu"), size=2048, repeats=10, dtype=dtypes[precision])
             for precision in sorted({precision for precision, _ in variants})}
    model_config = AutoConfig.from_pretrained(str(model_dir))
    features = prepare_features(work, Path(args.squad_json), Path(args.gap_tsv), tasks=tuple(args.tasks.split(",")))
    rows: list[dict] = []
    # Each run is a new process, so each pays its own kernels' one-off set-up per padded width (most
    # of it in the untimed first step); --passes repeats the comparison and reports the last.
    for repeat in range(args.passes):
        rows = []
        for task in args.tasks.split(","):
            for precision, dropout in variants:
                common = dict(task=task, precision=precision, attention_dropout=dropout, batch=args.global_batch_size)
                runs = [in_fresh_process(run_ours, task, features[task], model_dir, args.global_batch_size,
                                         args.steps, precision, work, cpu, attention_dropout=dropout, fast_cpu=fast)
                        for fast in (True, False)]
                for padding in ("max_length", "dynamic"):
                    runs.append(in_fresh_process(run_trainer, task, features[task], model_dir, args.global_batch_size,
                                                 args.steps, padding, precision, work, attention_dropout=dropout))
                seq_s = {run["runner"]: run["sequences_per_second"] for run in runs}
                for run in runs:
                    tflops = model_flops_per_second(run, model_config) / 1e12
                    run.update(common, model_tflops=tflops, mfu_vs_measured_peak=tflops / peaks[precision],
                               speedup_vs_trainer_max_length=run["sequences_per_second"] / seq_s["trainer/max_length"],
                               speedup_vs_trainer_dynamic=run["sequences_per_second"] / seq_s["trainer/dynamic"])
                    rows.append(run)
        print(f"pass {repeat + 1}/{args.passes} done", file=sys.stderr)
    return {"cpu": rows, "cpu_passes": args.passes, "cpu_model": cpu_model_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_native_bf16": native,
            "cpu_peak_tflops_measured": peaks, "steps": args.steps, "global_batch_size": args.global_batch_size}


def cuda_section(work: Path, tokenizer_dir: Path, steps: int, batch_size: int) -> dict:
    from transformers import BertConfig

    from train.testing import write_feature_dir
    from tasks.squad.model import synthetic_squad_table

    device = torch.device("cuda", 0)
    env = single_process(device)
    torch.cuda.set_device(device)
    model_dir = bert_base_dir(work, tokenizer_dir)
    rows = batch_size * (steps + 2)
    full = write_feature_dir(work / "squad-full-384", synthetic_squad_table(rows, min_len=384, max_len=384),
                             "squad", "train", 384)
    peak = measure_bf16_peak_tflops(device)
    flops = training_flops_per_sequence(BertConfig.from_pretrained(str(model_dir)), 384)
    results = []
    for precision in ("fp16", "bf16"):
        record = run_ours("squad", full, model_dir, batch_size, steps, precision, work, env)
        record.update(precision=precision, model="bert-base (random init)", seq_len=384, batch=batch_size,
                      mfu=record["sequences_per_second"] * flops / (peak * 1e12))
        results.append(record)
    return {"device": torch.cuda.get_device_name(device), "bf16_peak_tflops_measured": peak,
            "train_flops_per_sequence": flops, "runs": results}


def model_flops_per_second(row: dict, config) -> float:
    """Useful training FLOP/s of a row: its sequences/s times the FLOPs of a sequence of its mean real
    length (pad tokens do no useful work; E[T^2] >= E[T]^2, so the attention term is a slight underestimate)."""
    mean_len = row["tokens_per_second"] / row["sequences_per_second"]
    return row["sequences_per_second"] * training_flops_per_sequence(config, mean_len)


def parse_variants(text: str, native_bf16: bool) -> list[tuple[str, float | None]]:
    """``fp32:model,bf16:0`` -> [("fp32", None), ("bf16", 0.0)]; ``auto`` -> what precision auto picks here."""
    variants = []
    for item in text.split(","):
        precision, _, dropout = item.partition(":")
        if precision == "auto":
            precision = "bf16" if native_bf16 else "fp32"
        variants.append((precision, None if dropout in ("", "model") else float(dropout)))
    return variants


def print_table(rows: list[dict]) -> None:
    header = (f"{'task':6} {'runner':22} {'prec':5} {'attn drop':>9} {'seq/s':>8} {'tok/s':>8} {'TFLOP/s':>8} "
              f"{'of peak':>8} {'vs dynamic':>10} {'vs max_length':>13}")
    print(header)
    print("-" * len(header))
    for row in rows:
        dynamic, padded = row.get("speedup_vs_trainer_dynamic"), row.get("speedup_vs_trainer_max_length")
        dropout = "model" if row.get("attention_dropout") is None else f"{row['attention_dropout']:g}"
        print(f"{row['task']:6} {row['runner']:22} {row['precision']:5} {dropout:>9} {row['sequences_per_second']:>8.2f} "
              f"{row['tokens_per_second']:>8.0f} {row['model_tflops']:>8.3f} {100 * row['mfu_vs_measured_peak']:>7.1f}% "
              f"{(f'{dynamic:.2f}x' if dynamic else ''):>10} {(f'{padded:.2f}x' if padded else ''):>13}")


def main(argv: list[str] | None = None) -> int:
    from prep.models import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder or Hub id for the CPU comparison (default: packaged MiniLM)")
    parser.add_argument("--steps", type=int, default=8, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--global-batch-size", type=int, default=16)
    parser.add_argument("--variants", default="fp32:model,fp32:0,auto:model,auto:0",
                        help="CPU settings compared, each PRECISION:ATTENTION_DROPOUT (model: the model's own); "
                             "auto is the precision `auto` picks on this CPU (bf16 with native bf16 matmuls, else fp32)")
    parser.add_argument("--tasks", default="squad,gap")
    parser.add_argument("--squad-json", default=str(SHARED_DATA / "squad" / "dev-v1.1.json"))
    parser.add_argument("--gap-tsv", default=str(SHARED_DATA / "gap" / "gap-development.tsv"))
    parser.add_argument("--passes", type=int, default=1, help="CPU comparison passes; the last one is reported")
    parser.add_argument("--cuda-steps", type=int, default=30)
    parser.add_argument("--cuda-batch-size", type=int, default=64)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--json", default=None, help="where to write results (default runs/bench/train_throughput-<device>.json)")
    args = parser.parse_args(argv)

    model_dir = resolve_model(args.model)
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    results: dict = {"host": platform.node(), "cpu_threads": torch.get_num_threads(), "torch": torch.__version__,
                     "model": str(model_dir), "cpu": [], "cuda": None}
    try:
        if not args.skip_cpu:
            results.update(cpu_section(args, model_dir, work))
            print(f"CPU {results['cpu_model']} ({results['cpu_capability']}, native bf16 matmuls: "
                  f"{results['cpu_native_bf16']}), {results['cpu_threads']} threads; measured matmul peak "
                  + ", ".join(f"{p} {v:.3f} TFLOP/s" for p, v in results["cpu_peak_tflops_measured"].items()))
            print_table(results["cpu"])
        if torch.cuda.is_available():
            results["cuda"] = cuda_section(work, model_dir, args.cuda_steps, args.cuda_batch_size)
            print(f"\n{results['cuda']['device']}: measured bf16 matmul peak {results['cuda']['bf16_peak_tflops_measured']:.0f} TFLOP/s")
            for run in results["cuda"]["runs"]:
                print(f"  {run['precision']}: {run['sequences_per_second']:.0f} seq/s, "
                      f"{run['tokens_per_second']:.0f} tok/s, MFU {100 * run['mfu']:.1f}%")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    device = results["cuda"]["device"].replace(" ", "-") if results["cuda"] else "cpu"
    out = Path(args.json or f"runs/bench/train_throughput-{device}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
