"""The steps of the GPU run, one per process (bench/device_run.py starts them; see its docstring).

    python -m bench.device_steps STEP CONTEXT.json

Each step reads its context (the bundle's model and unpacked data, its scratch folder, OUT, its
deadline, what earlier steps found), and records what it measures into its record file as it
goes, so a step stopped at its limit still leaves the figures it had. The same code runs on the
GPU and, with ``--cpu-dry-run``, on CPU at tiny sizes (:data:`GPU` / :data:`DRY_RUN`): there a
2-layer, hidden-64 encoder on the bundle's tokenizer stands in for the MiniLM and the BERT-base
size (fp16 matmuls are emulated on CPU, dozens of times slower), runs are a few steps long, and
torch.compile is skipped, saying why. Everything else (the bundle's model loaded as fp32, prep on
the pool, our training loop, the evaluation engine, python -m profiling) is the same path.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from bench.device_run import PROFILE_TRACE, SQUAD_PREDICTIONS

MAX_OUT_BYTES = 15 * 2**20  # a device call brings back files of 16 MiB at most
SQUAD_RECIPE = {"precision": "fp16", "global_batch_size": 32, "epochs": 2, "lr": 1e-4}  # docs/results/squad's lr
GAP_RECIPE = {"precision": "fp16", "head": "multiply", "global_batch_size": 16, "epochs": 2, "lr": 1e-4,
              "select_best": True, "calibrate": True}  # luigi.cfg's [GapFineTuned], 2 epochs as in the results


@dataclass(frozen=True)
class Sizes:
    """What differs between the GPU run and its CPU dry run: device, model stand-ins and lengths only."""

    device: str
    stand_in: bool  # the tiny encoder instead of the MiniLM and the BERT-base size
    seq_len: int
    batch_size: int
    steps: int
    matmul_size: int
    matmul_dtype: str
    compile: bool
    compiled_run_s: float  # what one torch.compile throughput run is expected to take
    train_max_steps: int | None  # None: the whole 2 epochs
    train_batch_size: int | None  # None: the recipe's
    profile: dict = field(default_factory=dict)


GPU = Sizes(device="cuda", stand_in=False, seq_len=384, batch_size=32, steps=20, matmul_size=8192,
            matmul_dtype="bfloat16", compile=True, compiled_run_s=75.0, train_max_steps=None,
            train_batch_size=None, profile={"steps": 3, "warmup_steps": 3, "batch_size": 32})
DRY_RUN = Sizes(device="cpu", stand_in=True, seq_len=384, batch_size=2, steps=3, matmul_size=256,
                matmul_dtype="float32", compile=False, compiled_run_s=0.0, train_max_steps=2,
                train_batch_size=4, profile={"steps": 1, "warmup_steps": 1, "batch_size": 2})


@dataclass(frozen=True)
class Context:
    step: str
    dry_run: bool
    out_dir: Path
    work_dir: Path
    model_dir: Path  # the bundle's fp16 MiniLM
    data: dict
    record_file: Path
    step_deadline: float  # time.time() by which the step is stopped
    share_deadline: float  # time.time() after which its optional work would take a later step's time
    nproc: int
    earlier: dict

    @classmethod
    def read(cls, path: Path) -> "Context":
        values = json.loads(Path(path).read_text(encoding="utf-8"))
        for name in ("out_dir", "work_dir", "model_dir", "record_file"):
            values[name] = Path(values[name])
        return cls(**{f.name: values[f.name] for f in dataclasses.fields(cls)})

    @property
    def sizes(self) -> Sizes:
        return DRY_RUN if self.dry_run else GPU

    def left_s(self) -> float:
        return self.step_deadline - time.time()

    def share_left_s(self) -> float:
        return self.share_deadline - time.time()


class Record(dict):
    """The step's figures, rewritten to its record file (atomically) at every update."""

    def __init__(self, path: Path):
        super().__init__()
        self.path = path

    def update(self, *args, **kwargs) -> None:
        super().update(*args, **kwargs)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self, indent=2, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)


def stand_in_dir(ctx: Context, name: str) -> Path:
    """The dry run's tiny encoder on the bundle's tokenizer."""
    from train.testing import make_tiny_model_dir

    folder = ctx.work_dir / name
    return folder if (folder / "config.json").is_file() else make_tiny_model_dir(folder, ctx.model_dir, dropout=0.0)


def encoder_dir(ctx: Context) -> Path:
    """The MiniLM the fine-tunes use: the bundle's, or in the dry run its stand-in."""
    return stand_in_dir(ctx, "minilm-stand-in") if ctx.sizes.stand_in else ctx.model_dir


# --- 1. environment ------------------------------------------------------------------------------
def _driver_version() -> str | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        version = pynvml.nvmlSystemGetDriverVersion()
        return version.decode() if isinstance(version, bytes) else version
    except Exception as err:  # noqa: BLE001 - NVML missing or no driver: say so
        return f"unknown ({type(err).__name__}: {err})"


def _nccl_version() -> str | None:
    import torch

    try:
        version = torch.cuda.nccl.version()
    except Exception as err:  # noqa: BLE001 - a CPU build has no NCCL
        return f"none ({type(err).__name__})"
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def step_environment(ctx: Context, rec: Record) -> None:
    import platform

    import torch
    import transformers

    from bench.gpu_check import published_peak_tflops
    from bench.train_throughput import measure_bf16_peak_tflops
    from train.model import load_encoder

    sizes = ctx.sizes
    cuda = sizes.device == "cuda"
    if cuda and not torch.cuda.is_available():
        raise RuntimeError(f"torch {torch.__version__} sees no CUDA device (CUDA build {torch.version.cuda})")
    device = torch.device(sizes.device)
    name = torch.cuda.get_device_name(device) if cuda else f"CPU ({platform.processor() or platform.machine()})"
    rec.update(device=name, gpu_memory_gib=round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
               if cuda else None, driver=_driver_version() if cuda else None, torch=torch.__version__,
               cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version() if cuda else None, nccl=_nccl_version(),
               transformers=transformers.__version__, python=sys.version.split()[0], cpus=os.cpu_count())
    dtype = getattr(torch, sizes.matmul_dtype)
    peak = measure_bf16_peak_tflops(device, size=sizes.matmul_size, dtype=dtype)
    published = published_peak_tflops(name) if cuda else None
    rec.update(matmul_dtype=sizes.matmul_dtype, matmul_size=sizes.matmul_size, matmul_peak_tflops_measured=peak,
               published_dense_bf16_peak_tflops=published)
    encoder = load_encoder(ctx.model_dir)  # the bundle's fp16 file, read as fp32
    dtypes = sorted({str(p.dtype) for p in encoder.parameters()})
    rec.update(bundle_model={"parameters": sum(p.numel() for p in encoder.parameters()), "dtypes": dtypes})
    rec.update(markdown=[
        f"{name}" + (f", {rec['gpu_memory_gib']} GiB, driver {rec['driver']}" if cuda else ""),
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, NCCL {rec['nccl']}, transformers "
        f"{transformers.__version__}, Python {rec['python']}",
        f"{sizes.matmul_dtype} matmul {sizes.matmul_size}^3: {peak:.1f} TFLOP/s measured; published dense bf16 peak "
        f"{'unknown' if published is None else f'{published:g} TFLOP/s'}",
        f"bundle MiniLM loaded as {', '.join(dtypes)}: {rec['bundle_model']['parameters']:,} parameters"])


# --- 2. throughput -------------------------------------------------------------------------------
def throughput_plan(ctx: Context) -> list[tuple[str, Path, str, bool]]:
    """(label, model folder, precision, compiled) per row: eager rows first, then the compiled ones
    (BERT-base bf16 first: the MFU figure most comparable with others)."""
    from bench.train_throughput import bert_base_dir

    if ctx.sizes.stand_in:
        minilm = ("MiniLM stand-in (dry run: 2 layers, hidden 64)", stand_in_dir(ctx, "minilm-stand-in"))
        base = ("BERT-base stand-in (dry run: 2 layers, hidden 64)", stand_in_dir(ctx, "base-stand-in"))
    else:
        minilm = ("packaged MiniLM (the bundle's fp16 copy, loaded as fp32)", ctx.model_dir)
        base = ("BERT-base size (random init)", bert_base_dir(ctx.work_dir, ctx.model_dir))
    eager = [(label, folder, precision, False) for label, folder in (minilm, base) for precision in ("fp16", "bf16")]
    compiled = [(*base, "bf16", True), (*minilm, "fp16", True), (*base, "fp16", True), (*minilm, "bf16", True)]
    return eager + compiled


def step_throughput(ctx: Context, rec: Record) -> None:
    import torch

    from bench.gpu_check import full_length_features, published_peak_tflops, throughput_row, throughput_table
    from bench.train_throughput import measure_bf16_peak_tflops
    from train.dist import single_process

    sizes = ctx.sizes
    device = torch.device(sizes.device)
    env = single_process(device)
    found = ctx.earlier.get("environment", {})
    peak = found.get("matmul_peak_tflops_measured") or measure_bf16_peak_tflops(
        device, size=sizes.matmul_size, dtype=getattr(torch, sizes.matmul_dtype))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peaks = {"measured": peak, "published": published_peak_tflops(name) if device.type == "cuda" else None}
    features = full_length_features(ctx.work_dir, sizes.batch_size * (sizes.steps + 2), sizes.seq_len)
    rows: list[dict] = []
    for label, folder, precision, compiled in throughput_plan(ctx):
        row = {"model": label, "precision": precision, "compiled": compiled}
        if compiled and not sizes.compile:
            row["skipped"] = "not in the CPU dry run: inductor's C++ build of each graph takes minutes on 2 cores"
        elif compiled and ctx.share_left_s() < sizes.compiled_run_s:
            row["skipped"] = (f"{max(ctx.share_left_s(), 0):.0f} s left of this step's share of the budget, a "
                              f"compiled run takes about {sizes.compiled_run_s:.0f} s")
        else:
            try:
                row = throughput_row(label, folder, features, precision, sizes.batch_size, sizes.steps,
                                     ctx.work_dir, env, peaks, compile=compiled, seq_len=sizes.seq_len)
            except Exception as err:  # noqa: BLE001 - a row that fails (torch.compile where it does not work) is a finding
                row["error"] = f"{type(err).__name__}: {err}"
                traceback.print_exc()
            if device.type == "cuda":
                torch.cuda.empty_cache()
        rows.append(row)
        rec.update(peaks_tflops=peaks, rows=rows, markdown=throughput_table(rows))


# --- 3. SQuAD -------------------------------------------------------------------------------------
def _prep_figures(manifest: dict) -> dict:
    counts = manifest["counts"]
    return {"examples": counts["examples_in"], "skipped": counts["examples_skipped"],
            "features": counts["features_out"], "seconds": manifest["seconds"], "nproc": manifest["nproc"],
            "features_per_second": manifest["features_per_second"]}


def fine_tune(ctx: Context, task: str, features: Path, run_dir: Path, model_dir: Path, recipe: dict,
              eval_features: Path | None = None) -> dict:
    """Our loop on ``features`` with ``recipe``; no checkpoint but at epoch ends. Its figures."""
    from bench.gpu_check import skipped_optimizer_steps
    from train.checkpoint import checkpoint_path, load_checkpoint
    from train.config import TrainConfig
    from train.dist import single_process
    from tasks import get_task
    from train.loop import train

    if ctx.sizes.train_batch_size:
        recipe = {**recipe, "global_batch_size": ctx.sizes.train_batch_size}
    config = TrainConfig(task=task, features_dir=str(features), run_dir=str(run_dir), model_dir=str(model_dir),
                         eval_features_dir=str(eval_features) if eval_features else None, save_every_n_steps=None,
                         log_every_n_steps=50, progress_bar=False, device=ctx.sizes.device,
                         max_steps=ctx.sizes.train_max_steps, **recipe)
    metrics = train(config, get_task(task).train, single_process(ctx.sizes.device))
    history = metrics["train_loss_history"]
    return {"recipe": recipe, "max_steps": config.max_steps, "steps": metrics["steps"],
            "epochs_completed": metrics["epochs_completed"], "wall_seconds": round(metrics["wall_seconds"], 1),
            "throughput": metrics["throughput"], "final_train_loss": metrics["final_train_loss"],
            "loss_every_500_steps": [e for e in history if e["step"] % 500 == 0 or e is history[-1]],
            "grad_scaler_skipped_steps": skipped_optimizer_steps(load_checkpoint(checkpoint_path(run_dir)))
            if recipe["precision"] == "fp16" else None}


def step_squad(ctx: Context, rec: Record) -> None:
    from eval.run import run_evaluation
    from tasks import get_task
    from tasks.squad.prep import SquadPrepConfig, prepare_squad

    model_dir = encoder_dir(ctx)
    train_json, dev_json = Path(ctx.data["squad-train-v1.1"]), Path(ctx.data["squad-dev-v1.1"])
    features = {}
    for split, source in (("train", train_json), ("eval", dev_json)):
        features[split] = ctx.work_dir / f"squad-{split}"
        manifest = prepare_squad(source, features[split], model_dir, SquadPrepConfig(split=split), nproc=ctx.nproc,
                                 reserve_cpus=0)
        rec.update({f"prep_{split}": _prep_figures(manifest)})
    run_dir = ctx.work_dir / "squad-run"
    rec.update(fine_tune=fine_tune(ctx, "squad", features["train"], run_dir, model_dir, SQUAD_RECIPE))
    summary = run_evaluation(get_task("squad"), run_dir, features["eval"], dev_json, ctx.work_dir / "squad-eval",
                             device=ctx.sizes.device)
    metrics, counts = summary["metrics"], summary["counts"]
    shutil.copyfile(ctx.work_dir / "squad-eval" / "predictions.json", ctx.out_dir / SQUAD_PREDICTIONS)
    tune = rec["fine_tune"]
    rec.update(eval={"exact_match": metrics["exact_match"], "f1": metrics["f1"], "counts": counts,
                     "timing": summary.get("timing"), "predictions": SQUAD_PREDICTIONS},
               markdown=[f"prep: train {rec['prep_train']['features']:,} features from "
                         f"{rec['prep_train']['examples']:,} questions in {rec['prep_train']['seconds']} s, dev "
                         f"{rec['prep_eval']['features']:,} from {rec['prep_eval']['examples']:,} in "
                         f"{rec['prep_eval']['seconds']} s ({ctx.nproc} processes)",
                         f"fine-tune ({json.dumps(tune['recipe'])}): {tune['steps']} steps, {tune['epochs_completed']} "
                         f"epochs in {tune['wall_seconds']} s, {tune['throughput']['sequences_per_second'] or 0:.0f} "
                         f"seq/s, final loss {tune['final_train_loss']:.3f}, GradScaler skipped "
                         f"{tune['grad_scaler_skipped_steps']} steps",
                         f"dev: EM {metrics['exact_match']:.2f}, F1 {metrics['f1']:.2f} on {counts['questions']:,} "
                         f"questions ({counts['features']:,} features)"])


# --- 4. profile -----------------------------------------------------------------------------------
def step_profile(ctx: Context, rec: Record) -> None:
    from bench.gpu_check import profile_steps

    sizes = ctx.sizes
    folder = ctx.work_dir / "profile"
    folder.parent.mkdir(parents=True, exist_ok=True)
    model_dir = encoder_dir(ctx)
    result = profile_steps(folder, model_dir, sizes.profile["steps"], sizes.profile["batch_size"],
                           timeout_s=ctx.left_s() - 5, backends=("torch",), seq_len=sizes.seq_len,
                           device=sizes.device, warmup_steps=sizes.profile["warmup_steps"])
    rec.update(profile=result)
    if not result["ok"]:
        raise RuntimeError(result["error"])
    trace = folder / "traces" / "rank0.pt.trace.json"
    with open(trace, "rb") as source, gzip.open(ctx.out_dir / PROFILE_TRACE, "wb", compresslevel=6) as sink:
        shutil.copyfileobj(source, sink, 1 << 20)
    size = (ctx.out_dir / PROFILE_TRACE).stat().st_size
    if size > MAX_OUT_BYTES:
        (ctx.out_dir / PROFILE_TRACE).unlink()
        trace_note = f"the gzipped trace ({size / 2**20:.1f} MiB) is over what a device call brings back: not kept"
    else:
        trace_note = f"{PROFILE_TRACE} ({size / 2**20:.2f} MiB; open in https://ui.perfetto.dev)"
    step = result["step"] or {}
    split = step.get("split_ms") or {}
    rec.update(trace=trace_note, markdown=[
        f"torch.profiler over {sizes.profile['steps']} steady-state fp16 steps (after {sizes.profile['warmup_steps']}), "
        f"batch {sizes.profile['batch_size']}, synthetic rows up to {sizes.seq_len} tokens: "
        f"{step.get('step_ms', 0):.1f} ms per step", "",
        "| part | ms per step |", "|---|---|", *[f"| {name} | {ms:.2f} |" for name, ms in split.items()],
        "", trace_note])


# --- 5. GAP ---------------------------------------------------------------------------------------
def step_gap(ctx: Context, rec: Record) -> None:
    from eval.run import run_evaluation
    from tasks import get_task
    from tasks.gap.prep import GapPrepConfig, prepare_gap

    model_dir = encoder_dir(ctx)
    features = {}
    for split in ("development", "validation", "test"):
        features[split] = ctx.work_dir / f"gap-{split}"
        manifest = prepare_gap(ctx.data[f"gap-{split}"], features[split], model_dir, GapPrepConfig(),
                               nproc=min(ctx.nproc, 4), reserve_cpus=0)
        rec.update({f"prep_{split}": _prep_figures(manifest)})
    run_dir = ctx.work_dir / "gap-run"
    rec.update(fine_tune=fine_tune(ctx, "gap", features["development"], run_dir, model_dir, GAP_RECIPE,
                                   eval_features=features["validation"]))
    summary = run_evaluation(get_task("gap"), run_dir, features["test"], ctx.data["gap-test"], ctx.work_dir / "gap-eval",
                             device=ctx.sizes.device)
    metrics = summary["metrics"]
    figures = {key: metrics[key] for key in ("f1_overall", "bias_f_over_m", "log_loss", "accuracy")}
    rec.update(eval=figures, markdown=[
        f"GAP ({json.dumps(rec['fine_tune']['recipe'])}), seed 42, {rec['fine_tune']['steps']} steps in "
        f"{rec['fine_tune']['wall_seconds']} s: gap-test F1 {figures['f1_overall']:.1f}, bias F/M "
        f"{figures['bias_f_over_m']:.3f}, log loss {figures['log_loss']:.3f}"])


STEP_FUNCTIONS = {"environment": step_environment, "throughput": step_throughput, "squad": step_squad,
                  "profile": step_profile, "gap": step_gap}


def main(argv: list[str] | None = None) -> int:
    import logging

    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] not in STEP_FUNCTIONS:
        print(f"usage: python -m bench.device_steps {{{','.join(STEP_FUNCTIONS)}}} CONTEXT.json", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    ctx = Context.read(Path(argv[1]))
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    rec = Record(ctx.record_file)
    started = time.perf_counter()
    try:
        STEP_FUNCTIONS[argv[0]](ctx, rec)
    except Exception as err:  # noqa: BLE001 - recorded for the summary, then the step fails
        traceback.print_exc()
        rec.update(error=f"{type(err).__name__}: {err}"[-2000:], seconds=round(time.perf_counter() - started, 1))
        return 1
    rec.update(seconds=round(time.perf_counter() - started, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
