"""RACE prep speed: bertflow's pool (shards, merge) vs ``datasets.map`` doing the same, in questions per second.

    python -m bench.race_prep                                         # dev.jsonl, nproc 1 and 2, 512 tokens
    python -m bench.race_prep --input test.jsonl --nprocs 1 2 4 --out docs/benchmarks

The Hugging Face way: ``datasets.load_dataset("json")`` of the JSON Lines file, then
``Dataset.map(batched=True, num_proc=N)`` that pairs each question's four question+option texts
with the passage through ``tokenizer(passage, qa, truncation="only_first", max_length=L)``
(the passage repeated, so tokenized four times per question) and writes one row per question
with its four sequences. bertflow: ``tasks.race.prep.prepare_race`` (read, one passage
tokenization per article on the shared pool, Arrow + manifest). Each measurement runs in a fresh
subprocess with the libraries imported before the clock starts; reading the file and loading
the tokenizer are timed. Afterwards the rows are compared question by question (ids, the four
sequences' ids and token types). Writes ``race_prep.json`` into --out and prints a table.
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
DEFAULT_INPUT = DATA / "race" / "dev.jsonl"
IMPLS = ("bertflow-shards", "bertflow-merge", "hf-datasets")


def hf_questions(batch: dict, tokenizer, max_seq_length: int) -> dict:
    """One ``datasets.map`` batch of articles -> one row per question with its four sequences."""
    from tasks.race.read import LETTERS, qa_text, question_id

    ids, labels, passages, qas = [], [], [], []
    for article, questions, options, answers, article_id in zip(
            batch["article"], batch["questions"], batch["options"], batch["answers"], batch["id"]):
        for k, (question, four, answer) in enumerate(zip(questions, options, answers)):
            ids.append(question_id(article_id, k))
            labels.append(LETTERS.index(answer))
            passages += [article] * len(four)
            qas += [qa_text(question, option) for option in four]
    encoded = tokenizer(passages, qas, truncation="only_first", max_length=max_seq_length)
    group = [(4 * i, 4 * i + 4) for i in range(len(ids))]
    return {"example_id": ids, "label": labels,
            "input_ids": [encoded["input_ids"][a:b] for a, b in group],
            "token_type_ids": [encoded["token_type_ids"][a:b] for a, b in group]}


def run_one(impl: str, input_path: str, nproc: int, work_dir: str, max_seq_length: int) -> dict:
    """Child side: build the features once; seconds and questions as JSON."""
    import torch  # noqa: F401 - transformers imports it when loading a tokenizer
    import transformers  # noqa: F401

    from prep.tokenizer import default_model_dir

    out = Path(work_dir)
    started = time.perf_counter()
    if impl.startswith("bertflow"):
        from tasks.race.prep import RacePrepConfig, prepare_race

        manifest = prepare_race(input_path, out / "features", default_model_dir(), RacePrepConfig(max_seq_length),
                                nproc=nproc, mode=impl.split("-")[1], reserve_cpus=0)
        questions = manifest["counts"]["features_out"]
    else:
        import datasets

        from prep.tokenizer import load_fast_tokenizer

        datasets.disable_progress_bars()
        tokenizer = load_fast_tokenizer(default_model_dir())
        data = datasets.load_dataset("json", data_files=input_path, split="train", cache_dir=str(out / "cache"))
        rows = data.map(hf_questions, batched=True, batch_size=16, num_proc=nproc if nproc > 1 else None,
                        remove_columns=data.column_names, cache_file_name=str(out / "hf-rows.arrow"),
                        fn_kwargs=dict(tokenizer=tokenizer, max_seq_length=max_seq_length))
        questions = len(rows)
        rows.save_to_disk(str(out / "hf"))
    return {"seconds": time.perf_counter() - started, "questions": questions}


def measure(impl: str, input_path: Path, nproc: int, work: Path, max_seq_length: int) -> dict:
    result = run_child("bench.race_prep", impl, input_path, nproc, work, str(max_seq_length))
    result["questions_per_second"] = round(result["questions"] / result["seconds"], 1)
    return result


def compare_rows(bertflow_dir: Path, hf_dir: Path) -> dict:
    """Question-by-question comparison (both in file order)."""
    import datasets

    from prep.features import open_features, sorted_by_feature_id

    ours = sorted_by_feature_id(open_features(bertflow_dir / "features"))
    theirs = datasets.load_from_disk(str(hf_dir / "hf"))
    same = {name: ours.column(name).to_pylist() == theirs[name]
            for name in ("example_id", "input_ids", "token_type_ids")}
    same["label"] = ours.column("label").to_pylist() == theirs["label"]
    return {"bertflow_questions": ours.num_rows, "hf_questions": len(theirs), "equal": same,
            "identical": all(same.values())}


def main(argv=None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--child":
        impl, input_path, nproc, work, result_file, length = sys.argv[2:8]
        Path(result_file).write_text(json.dumps(run_one(impl, input_path, int(nproc), work, int(length))))
        return 0
    parser = argparse.ArgumentParser(prog="python -m bench.race_prep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT, help="RACE JSON Lines file (default: dev.jsonl)")
    parser.add_argument("--nprocs", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    parser.add_argument("--max-seq-length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=1, help="runs per point; the fastest is kept")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        parser.error(f"input not found: {args.input}")
    args.out.mkdir(parents=True, exist_ok=True)
    rows, comparisons = [], []
    print(f"{'impl':<16} {'nproc':>5} {'seconds':>8} {'questions':>9} {'questions/s':>12}")
    with tempfile.TemporaryDirectory(prefix="bench-race-") as scratch:
        for nproc in args.nprocs:
            kept: dict[str, Path] = {}
            for impl in args.impls:
                result, kept[impl] = fastest_of(args.repeats, scratch, impl, nproc, lambda work: measure(
                    impl, args.input, nproc, work, args.max_seq_length))
                rows.append(result)
                print(f"{impl:<16} {nproc:>5} {result['seconds']:>8.2f} {result['questions']:>9} "
                      f"{result['questions_per_second']:>12.1f}", flush=True)
            if "hf-datasets" in kept:
                comparisons += [{"nproc": nproc, "impl": impl, **compare_rows(kept[impl], kept["hf-datasets"])}
                                for impl in kept if impl.startswith("bertflow")]
    for c in comparisons:
        print(f"{c['impl']} vs hf-datasets at nproc {c['nproc']}: {c['bertflow_questions']} vs {c['hf_questions']} "
              f"questions, {'identical' if c['identical'] else 'DIFFER: ' + json.dumps(c['equal'])}")
    for row in rows:
        recipe = next((r for r in rows if r["impl"] == "hf-datasets" and r["nproc"] == row["nproc"]), None)
        row["vs_hf_same_nproc"] = round(recipe["seconds"] / row["seconds"], 2) if recipe else None
    report = {"machine": {"cpus": len(os.sched_getaffinity(0)), "platform": platform.platform(),
                          "python": platform.python_version(), "load_average": os.getloadavg()},
              "input": str(args.input), "max_seq_length": args.max_seq_length, "rows": rows,
              "comparisons": comparisons}
    (args.out / "race_prep.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'race_prep.json'}")
    return 0 if all(c["identical"] for c in comparisons) else 1


if __name__ == "__main__":
    sys.exit(main())
