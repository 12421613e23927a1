"""Every figure in the benchmark tables matches the committed JSON it came from.

The tables of docs/benchmarks/README.md (prep scaling, training throughput, RACE prep) and
docs/benchmarks/train_speed.md (training per precision and attention dropout), each row found by its
labels; figures compare at the page's own precision (tests/readme_tables.py). The results pages
are checked by tests/test_readme_figures.py.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import REPO
from tests.readme_tables import assert_figures, load, numbers, tables

pytestmark = pytest.mark.fast

BENCHMARKS = REPO / "docs" / "benchmarks"
BENCHMARKS_PAGE = BENCHMARKS / "README.md"


def benchmark_tables() -> tuple[list[dict], list[dict]]:
    found = tables(BENCHMARKS_PAGE.read_text(encoding="utf-8"))
    prep = next(t for t in found if "implementation" in t[0])
    train = next(t for t in found if "runner" in t[0])
    return prep, train


def test_prep_scaling_table_matches_its_json():
    prep, _ = benchmark_tables()
    rows = load(BENCHMARKS / "prep_scaling.json")["rows"]
    best: dict = {}
    for r in rows:  # the page shows the best of the repeats
        key = (r["input"], r["nproc"], r["impl"])
        if key not in best or r["seconds"] < best[key]["seconds"]:
            best[key] = r
    shown = {(row["input"], int(row["nproc"]), row["implementation"]) for row in prep}
    assert shown == set(best), "the benchmarks page's table and prep_scaling.json cover different points"
    for row in prep:
        key = (row["input"], int(row["nproc"]), row["implementation"])
        r, recipe = best[key], best[(key[0], key[1], "hf-recipe")]
        where = f"prep_scaling {key}"
        assert_figures(row["seconds"], [r["seconds"]], where)
        assert_figures(row["features/s"], [r["features_per_second"]], where)
        assert_figures(row["vs recipe (same nproc)"], [r["features_per_second"] / recipe["features_per_second"]], where)
        assert_figures(row["peak RSS, all processes"], [r["peak_rss_mb"]], where)


RUNNERS = {r"^ours": "ours", r"^Trainer, padded to max length": "trainer/max_length",
           r"^Trainer, dynamic padding": "trainer/dynamic"}
TASKS = {r"^SQuAD": "squad", r"^GAP": "gap"}


def test_train_throughput_table_matches_its_json():
    _, train = benchmark_tables()
    report = load(BENCHMARKS / "train_throughput-cpu.json")
    runs = {(r["task"], r["runner"]): r for r in report["cpu"]}
    seen = set()
    for row in train:
        task = next(name for pattern, name in TASKS.items() if re.search(pattern, row["task"]))
        runner = next(name for pattern, name in RUNNERS.items() if re.search(pattern, row["runner"]))
        seen.add((task, runner))
        r, dynamic = runs[(task, runner)], runs[(task, "trainer/dynamic")]
        where = f"train_throughput {task} {runner}"
        assert_figures(row["sequences/s"], [r["sequences_per_second"]], where)
        assert_figures(row["real tokens/s"], [r["tokens_per_second"]], where)
        assert_figures(row["vs Trainer padded to max length"], [r["speedup_vs_trainer_max_length"]], where)
        vs_dynamic = row["vs Trainer, dynamic padding"]
        if runner != "trainer/max_length":
            assert_figures(vs_dynamic, [r["sequences_per_second"] / dynamic["sequences_per_second"]], where)
        else:
            assert not numbers(vs_dynamic), where
        assert r["batch"] == 16 and r["precision"] == "fp32"
    assert seen == set(runs), "the benchmarks page's table and train_throughput-cpu.json cover different runs"
    assert report["cpu_passes"] == 2 and {r["steps_measured"] for r in report["cpu"]} == {7}


def test_train_speed_variants_table_matches_its_json():
    """docs/benchmarks/train_speed.md: every row (task x runner x precision x attention dropout) is its JSON row."""
    table, _ = tables((BENCHMARKS / "train_speed.md").read_text(encoding="utf-8"))
    report = load(BENCHMARKS / "train_throughput-cpu-variants.json")
    runs = {(r["task"], r["runner"], r["precision"], r["attention_dropout"]): r for r in report["cpu"]}
    seen = set()
    for row in table:
        dropout = None if row["attention dropout"].startswith("model") else float(row["attention dropout"])
        key = (row["task"], row["runner"], row["precision"], dropout)
        seen.add(key)
        r, where = runs[key], f"train_speed {key}"
        assert_figures(row["seq/s"], [r["sequences_per_second"]], where)
        assert_figures(row["useful GFLOP/s"], [r["model_tflops"] * 1000], where)
        assert_figures(row["of measured peak"], [r["mfu_vs_measured_peak"] * 100], where)
        assert_figures(row["vs Trainer, dynamic"], [r["speedup_vs_trainer_dynamic"]], where)
    assert seen == set(runs), "train_speed.md's table and train_throughput-cpu-variants.json cover different runs"


# The op groups of train_speed.md's profile table (bench.step_profile's JSON: every op's ms a step).
STEP_GROUPS = {"matmuls": ("aten::mm", "aten::addmm", "aten::bmm"),
               "dropout masks": ("aten::bernoulli_", "aten::random_", "aten::ge"),
               "softmax": ("aten::_softmax", "aten::_softmax_backward_data"), "copies": ("aten::copy_",)}


def test_train_speed_profile_table_matches_its_json():
    """docs/benchmarks/train_speed.md's second table: each row's op groups are sums over its
    step_profile JSON's ops, "the rest" is what the groups leave of the step."""
    _, table = tables((BENCHMARKS / "train_speed.md").read_text(encoding="utf-8"))
    assert len(table) == 4
    for row in table:
        fast = {"on": "true", "off": "false"}[row["fast CPU training"]]
        report = load(BENCHMARKS / f"step_profile-{row['task']}-bf16-fast-cpu-{fast}.json")
        assert (report["args"]["precision"], report["args"]["fast_cpu"], report["args"]["task"]) == ("bf16", fast, row["task"])
        ops = {op["op"]: op["ms_per_step"] for op in report["ops"]}
        groups = {name: sum(ops.get(op, 0.0) for op in members) for name, members in STEP_GROUPS.items()}
        where = f"train_speed profile {row['task']} {fast}"
        assert_figures(row["seq/s (profiler on)"], [report["throughput"]["sequences_per_second"]], where)
        assert_figures(row["step, ms"], [sum(ops.values())], where)
        for name, value in groups.items():
            assert_figures(row[name], [value], where)
        assert_figures(row["the rest"], [sum(ops.values()) - sum(groups.values())], where)


def test_race_prep_table_matches_its_json():
    found = tables(BENCHMARKS_PAGE.read_text(encoding="utf-8"))
    table = next(t for t in found if "questions/s" in t[0])
    report = load(BENCHMARKS / "race_prep.json")
    runs = {(r["nproc"], r["impl"]): r for r in report["rows"]}
    shown = {(int(row["nproc"]), row["way"]) for row in table}
    assert shown == set(runs), "the benchmarks page's table and race_prep.json cover different points"
    for row in table:
        r = runs[(int(row["nproc"]), row["way"])]
        recipe = runs[(r["nproc"], "hf-datasets")]
        where = f"race_prep {row['nproc']} {row['way']}"
        assert_figures(row["seconds"], [r["seconds"]], where)
        assert_figures(row["questions/s"], [r["questions_per_second"]], where)
        assert_figures(row["vs datasets.map (same nproc)"], [recipe["seconds"] / r["seconds"]], where)
    assert report["comparisons"] and all(c["identical"] for c in report["comparisons"])
    assert {r["questions"] for r in report["rows"]} == {4887} and report["max_seq_length"] == 512
