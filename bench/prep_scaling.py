"""Prep speed and memory vs number of processes: bertflow (shards, merge) vs the HF recipe.

    python -m bench.prep_scaling                       # dev-v1.1 and train-v1.1 from ../shared/data
    python -m bench.prep_scaling --inputs dev-v1.1.json --nprocs 1 2 4 8 12 16 --out docs/benchmarks

Every measurement runs in a fresh subprocess; its wall time and the peak memory of its whole
process tree (RSS summed over the main process and all its children, sampled every 50 ms; shared
pages count once per process, so this overstates) are recorded. Both times run from the raw JSON
to features on disk, with libraries already imported: bertflow reads the JSON, loads the
tokenizer, spawns workers and writes Arrow + manifest; the recipe loads the tokenizer, flattens
the JSON and runs run_qa's ``prepare_train_features`` through
``datasets.Dataset.map(batched=True, num_proc=N)``. The recipe runs with the Rust tokenizer's
own threads on (its default: all cores even at num_proc=1).
Writes ``prep_scaling.json``, ``prep_scaling.md`` (the README's table) and ``prep_scaling.png``
(time vs nproc) into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTFLOW_DATA", REPO.parent / "shared" / "data"))
DEFAULT_INPUTS = [DATA / "squad" / "dev-v1.1.json", DATA / "squad" / "train-v1.1.reconstructed.json"]
IMPLS = ("bertflow-shards", "bertflow-merge", "hf-recipe")


def run_one(impl: str, input_path: str, nproc: int, work_dir: str) -> dict:
    """Child side: build train features once and report seconds and feature count as JSON.

    Libraries are imported before the clock starts; reading the JSON and loading the tokenizer
    are inside it, for both implementations.
    """
    import torch  # noqa: F401 - transformers imports it when loading a tokenizer
    import transformers  # noqa: F401

    from prep.tokenizer import default_model_dir

    started = time.perf_counter()
    if impl.startswith("bertflow"):
        from tasks.squad.prep import SquadPrepConfig, prepare_squad

        manifest = prepare_squad(input_path, Path(work_dir) / "out", default_model_dir(), SquadPrepConfig(),
                                 nproc=nproc, mode=impl.split("-")[1], reserve_cpus=0)
        features = manifest["counts"]["features_out"]
        pool_seconds = manifest["pool_seconds"]
    else:
        import datasets

        from bench.hf_recipe import load_examples, prepare_train_features
        from prep.tokenizer import load_fast_tokenizer

        datasets.disable_progress_bars()
        tokenizer = load_fast_tokenizer(default_model_dir())
        examples = load_examples(input_path)
        dataset = datasets.Dataset.from_list(examples)
        out = dataset.map(prepare_train_features, batched=True, num_proc=nproc if nproc > 1 else None,
                          remove_columns=dataset.column_names,
                          fn_kwargs=dict(tokenizer=tokenizer, max_seq_length=384, doc_stride=128),
                          cache_file_name=str(Path(work_dir) / "recipe.arrow"))
        features = len(out)
        pool_seconds = None
    return {"seconds": time.perf_counter() - started, "features": features, "pool_seconds": pool_seconds}


def _tree_rss(proc) -> int:
    import psutil

    try:
        tree = [proc, *proc.children(recursive=True)]
    except psutil.Error:  # the run ended between two samples
        return 0
    total = 0
    for p in tree:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def measure(impl: str, input_path: Path, nproc: int) -> dict:
    """Parent side: run one measurement in a subprocess, sampling its tree's memory."""
    import psutil

    with tempfile.TemporaryDirectory(prefix="bench-prep-") as work:
        result_file = Path(work) / "result.json"
        cmd = [sys.executable, "-m", "bench.prep_scaling", "--child", impl, str(input_path), str(nproc), work,
               str(result_file)]
        wall = time.perf_counter()
        child = subprocess.Popen(cmd, cwd=REPO)
        proc, peak = psutil.Process(child.pid), 0
        stop = threading.Event()

        def sample():
            nonlocal peak
            while not stop.is_set():
                peak = max(peak, _tree_rss(proc))
                stop.wait(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = child.wait()
        stop.set()
        sampler.join()
        if code != 0:
            raise RuntimeError(f"{impl} nproc={nproc} on {input_path.name} failed with exit code {code}")
        result = json.loads(result_file.read_text())
    result.update(impl=impl, input=input_path.name, nproc=nproc, peak_rss_mb=round(peak / 2**20),
                  process_seconds=round(time.perf_counter() - wall, 2))
    result["features_per_second"] = round(result["features"] / result["seconds"], 1)
    return result


def summarise(rows: list[dict]) -> dict:
    """Speed-ups against the recipe and parallel efficiency per input."""
    summary = {}
    for name in sorted({r["input"] for r in rows}):
        mine = [r for r in rows if r["input"] == name]
        best = {}
        for r in mine:
            key = (r["impl"], r["nproc"])
            if key not in best or r["seconds"] < best[key]["seconds"]:
                best[key] = r
        recipe_best = max((r["features_per_second"] for (impl, _), r in best.items() if impl == "hf-recipe"), default=None)
        entry = {"recipe_best_features_per_second": recipe_best}
        for impl in IMPLS[:2]:
            per_n = {n: r for (i, n), r in best.items() if i == impl}
            if 1 in per_n and 2 in per_n:
                entry[f"{impl}_efficiency_1_to_2"] = round(per_n[1]["seconds"] / (2 * per_n[2]["seconds"]), 3)
                # the parallel stage alone (pool start-up, JSON reading and tokenizer loading excluded)
                entry[f"{impl}_pool_efficiency_1_to_2"] = round(
                    per_n[1]["pool_seconds"] / (2 * per_n[2]["pool_seconds"]), 3)
            for n, r in per_n.items():
                recipe = best.get(("hf-recipe", n))
                if recipe:
                    entry[f"{impl}_vs_recipe_at_nproc_{n}"] = round(r["features_per_second"] / recipe["features_per_second"], 2)
                if recipe_best:
                    entry[f"{impl}_vs_recipe_best_at_nproc_{n}"] = round(r["features_per_second"] / recipe_best, 2)
        entry["peak_rss_mb_max"] = max(r["peak_rss_mb"] for r in mine)
        summary[name] = entry
    return summary


def markdown_table(rows: list[dict]) -> str:
    """Best of the repeats per (input, impl, nproc), as the README shows it."""
    best = {}
    for r in rows:
        key = (r["input"], r["nproc"], r["impl"])
        if key not in best or r["seconds"] < best[key]["seconds"]:
            best[key] = r
    lines = ["| input | nproc | implementation | seconds | features/s | vs recipe (same nproc) | peak RSS, all processes |",
             "|---|---|---|---|---|---|---|"]
    for (name, nproc, impl), r in sorted(best.items()):
        recipe = best.get((name, nproc, "hf-recipe"))
        ratio = f"{r['features_per_second'] / recipe['features_per_second']:.2f}x" if recipe else ""
        lines.append(f"| {name} | {nproc} | {impl} | {r['seconds']:.2f} | {r['features_per_second']:,.0f} | "
                     f"{ratio} | {r['peak_rss_mb']:,} MB |")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = sorted({r["input"] for r in rows})
    fig, axes = plt.subplots(1, len(inputs), figsize=(6 * len(inputs), 4), squeeze=False)
    for ax, name in zip(axes[0], inputs):
        for impl in IMPLS:
            points = sorted((r["nproc"], r["seconds"]) for r in rows if r["input"] == name and r["impl"] == impl)
            if points:
                ax.plot(*zip(*points), marker="o", label=impl)
        ax.set(title=f"SQuAD train features: {name}", xlabel="processes (nproc / num_proc)", ylabel="seconds")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        impl, input_path, nproc, work, result_file = sys.argv[2:7]
        Path(result_file).write_text(json.dumps(run_one(impl, input_path, int(nproc), work)))
        return 0
    cpus = len(os.sched_getaffinity(0))
    parser = argparse.ArgumentParser(prog="python -m bench.prep_scaling", description=__doc__.split("\n\n")[0])
    parser.add_argument("--inputs", nargs="+", type=Path, default=DEFAULT_INPUTS)
    parser.add_argument("--nprocs", nargs="+", type=int, default=list(range(1, cpus + 1)))
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--repeats", type=int, default=1, help="runs per point; the fastest is kept")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    header = f"{'input':<32} {'impl':<16} {'nproc':>5} {'seconds':>8} {'features':>9} {'feat/s':>9} {'peak MB':>8}"
    print(header)
    for input_path in args.inputs:
        if not input_path.is_file():
            print(f"skipping {input_path}: not found")
            continue
        for nproc in args.nprocs:
            for impl in args.impls:
                for _ in range(args.repeats):
                    r = measure(impl, input_path, nproc)
                    rows.append(r)
                    print(f"{r['input']:<32} {impl:<16} {nproc:>5} {r['seconds']:>8.2f} {r['features']:>9} "
                          f"{r['features_per_second']:>9.0f} {r['peak_rss_mb']:>8}", flush=True)
    report = {
        "machine": {"cpus": cpus, "platform": platform.platform(), "processor": platform.processor(),
                    "python": platform.python_version()},
        "rows": rows,
        "summary": summarise(rows),
    }
    (args.out / "prep_scaling.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(rows, args.out / "prep_scaling.png")
    (args.out / "prep_scaling.md").write_text(markdown_table(rows))
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {args.out / 'prep_scaling.json'} and {args.out / 'prep_scaling.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
