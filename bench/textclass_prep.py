"""Text classification prep speed: bertflow's folding (shards, merge) vs the Hugging Face way.

    python -m bench.textclass_prep                                  # the BBC file, nproc 1 and 2
    python -m bench.textclass_prep --nprocs 1 2 4 --fold-stride 32 --out docs/benchmarks

The Hugging Face way: ``datasets.Dataset.from_csv`` then ``Dataset.map(batched=True,
num_proc=N)`` of ``tokenizer(text, truncation=True, max_length=L, stride=S,
return_overflowing_tokens=True)``, labels copied to each window through
``overflow_to_sample_mapping``. bertflow: ``tasks.textclass.prep.prepare_textclass`` (read, fold
on the shared pool, Arrow + manifest). Every measurement runs in a fresh subprocess, libraries
imported before the clock starts, reading the file and loading the tokenizer inside it; the
Hugging Face run keeps the Rust tokenizer's own threads on (its default). Texts/s and
windows/s are per wall second. Afterwards the windows are compared one by one (count, ids,
token types): both cut ``max_length - 2`` tokens per window, starts ``max_length - 2 - S`` apart.
Writes ``textclass_prep.json`` into --out and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench.children import fastest_of, run_child

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BERTFLOW_DATA", REPO.parent / "shared" / "data"))
DEFAULT_INPUT = DATA / "textclass" / "bbc-news" / "train.csv"
IMPLS = ("bertflow-shards", "bertflow-merge", "hf-datasets")


def hf_windows(batch: dict, tokenizer, text_column: str, label_column: str, label_ids: dict,
               max_seq_length: int, fold_stride: int) -> dict:
    """One ``datasets.map`` batch: every text's overflowing windows, each with its text's label."""
    encoded = tokenizer(batch[text_column], truncation=True, max_length=max_seq_length, stride=fold_stride,
                        return_overflowing_tokens=True)
    sources = encoded.pop("overflow_to_sample_mapping")
    encoded["label"] = [label_ids[batch[label_column][i]] for i in sources]
    return encoded


def run_one(impl: str, input_path: str, nproc: int, work_dir: str, args: dict) -> dict:
    """Child side: build the windows once; seconds, texts and windows as JSON."""
    import torch  # noqa: F401 - transformers imports it when loading a tokenizer
    import transformers  # noqa: F401

    from prep.tokenizer import default_model_dir

    out = Path(work_dir)
    started = time.perf_counter()
    if impl.startswith("bertflow"):
        from tasks.textclass.prep import TextClassPrepConfig, prepare_textclass

        config = TextClassPrepConfig(max_seq_length=args["max_seq_length"], fold_stride=args["fold_stride"],
                                     text_column=args["text_column"], label_column=args["label_column"])
        manifest = prepare_textclass(input_path, out / "features", default_model_dir(), config, nproc=nproc,
                                     mode=impl.split("-")[1], reserve_cpus=0)
        texts, windows = manifest["counts"]["examples_converted"], manifest["counts"]["features_out"]
    else:
        import datasets

        from prep.tokenizer import load_fast_tokenizer

        datasets.disable_progress_bars()
        tokenizer = load_fast_tokenizer(default_model_dir())
        data = datasets.Dataset.from_csv(input_path, cache_dir=str(out / "cache"), keep_default_na=False)
        label_ids = {name: i for i, name in enumerate(sorted(set(data[args["label_column"]])))}
        windows_ds = data.map(
            hf_windows, batched=True, num_proc=nproc if nproc > 1 else None, remove_columns=data.column_names,
            fn_kwargs=dict(tokenizer=tokenizer, text_column=args["text_column"], label_column=args["label_column"],
                           label_ids=label_ids, max_seq_length=args["max_seq_length"],
                           fold_stride=args["fold_stride"]),
            cache_file_name=str(out / "hf-windows.arrow"))
        texts, windows = len(data), len(windows_ds)
        windows_ds.save_to_disk(str(out / "hf"))
    return {"seconds": time.perf_counter() - started, "texts": texts, "windows": windows}


def measure(impl: str, input_path: Path, nproc: int, work: Path, args: dict) -> dict:
    """Parent side: one measurement in a subprocess, its output left in ``work``."""
    result = run_child("bench.textclass_prep", impl, input_path, nproc, work, json.dumps(args))
    result["texts_per_second"] = round(result["texts"] / result["seconds"], 1)
    result["windows_per_second"] = round(result["windows"] / result["seconds"], 1)
    return result


def compare_windows(bertflow_dir: Path, hf_dir: Path) -> dict:
    """Window-by-window comparison of the two outputs (both in text order, windows in order)."""
    import datasets

    from prep.features import open_features, sorted_by_feature_id

    ours = sorted_by_feature_id(open_features(bertflow_dir / "features"))
    theirs = datasets.load_from_disk(str(hf_dir / "hf"))
    our_ids, their_ids = ours.column("input_ids").to_pylist(), theirs["input_ids"]
    our_types, their_types = ours.column("token_type_ids").to_pylist(), theirs["token_type_ids"]
    report = {"bertflow_windows": len(our_ids), "hf_windows": len(their_ids),
              "labels_equal": ours.column("label").to_pylist() == theirs["label"]}
    first = next((i for i, (a, b) in enumerate(zip(our_ids, their_ids)) if a != b), None)
    if first is None and len(our_ids) != len(their_ids):
        first = min(len(our_ids), len(their_ids))
    report["identical"] = first is None and our_types == their_types
    if first is not None:
        a = our_ids[first] if first < len(our_ids) else []
        b = their_ids[first] if first < len(their_ids) else []
        at = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        report["first_difference"] = {"window": first, "token": at, "bertflow_length": len(a), "hf_length": len(b),
                                      "example_id": ours.column("example_id")[first].as_py() if a else None}
    return report


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        impl, input_path, nproc, work, result_file, args = sys.argv[2:8]
        Path(result_file).write_text(json.dumps(run_one(impl, input_path, int(nproc), work, json.loads(args))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.textclass_prep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="labelled CSV (default: the BBC file)")
    parser.add_argument("--text-column", default="Text")
    parser.add_argument("--label-column", default="Category")
    parser.add_argument("--nprocs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--fold-stride", type=int, default=0, help="overlap between windows (HF: stride)")
    parser.add_argument("--repeats", type=int, default=1, help="runs per point; the fastest is kept")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        parser.error(f"input not found: {args.input}")
    settings = {"text_column": args.text_column, "label_column": args.label_column,
                "max_seq_length": args.max_seq_length, "fold_stride": args.fold_stride}
    args.out.mkdir(parents=True, exist_ok=True)
    rows, comparisons = [], []
    print(f"{'impl':<16} {'nproc':>5} {'seconds':>8} {'texts':>6} {'windows':>8} {'texts/s':>9} {'windows/s':>10}")
    with tempfile.TemporaryDirectory(prefix="bench-textclass-") as scratch:
        for nproc in args.nprocs:
            kept: dict[str, Path] = {}
            for impl in args.impls:
                r, kept[impl] = fastest_of(args.repeats, scratch, impl, nproc,
                                           lambda work: measure(impl, args.input, nproc, work, settings))
                rows.append(r)
                print(f"{impl:<16} {nproc:>5} {r['seconds']:>8.2f} {r['texts']:>6} {r['windows']:>8} "
                      f"{r['texts_per_second']:>9.0f} {r['windows_per_second']:>10.0f}", flush=True)
            for impl in [i for i in kept if i.startswith("bertflow")]:
                if "hf-datasets" in kept:
                    comparisons.append({"nproc": nproc, "impl": impl,
                                        **compare_windows(kept[impl], kept["hf-datasets"])})
    for c in comparisons:
        verdict = "identical windows" if c["identical"] else f"DIFFER: {c.get('first_difference')}"
        print(f"{c['impl']} vs hf-datasets at nproc {c['nproc']}: {c['bertflow_windows']} vs {c['hf_windows']} "
              f"windows, {verdict}, labels equal: {c['labels_equal']}")
    report = {
        "machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                    "python": platform.python_version()},
        "input": str(args.input), "settings": settings, "rows": rows, "comparisons": comparisons,
    }
    (args.out / "textclass_prep.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'textclass_prep.json'}")
    return 0 if all(c["identical"] for c in comparisons) else 1


if __name__ == "__main__":
    sys.exit(main())
