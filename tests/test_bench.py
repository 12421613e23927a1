"""The benchmark scripts run end to end on a tiny input and write their JSON, so they cannot rot.

Each runs as its users run it (``python -m bench.<script>``), with flags that make it take
seconds: a three-paragraph SQuAD file, 24 GAP rows, one process, a tiny BERT, 2 steps.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared_data


@pytest.fixture(scope="module")
def tiny_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench-inputs")
    payload = json.loads(shared_data("squad/dev-v1.1.json").read_text(encoding="utf-8"))
    payload["data"] = [{**payload["data"][0], "paragraphs": payload["data"][0]["paragraphs"][:3]}]
    squad = root / "squad-small.json"
    squad.write_text(json.dumps(payload), encoding="utf-8")
    lines = shared_data("gap/gap-development.tsv").read_text(encoding="utf-8").splitlines()
    gap = root / "gap-small.tsv"
    gap.write_text("\n".join(lines[:25]) + "\n", encoding="utf-8")
    return {"squad": squad, "gap": gap, "questions": sum(len(p["qas"]) for p in payload["data"][0]["paragraphs"])}


def run_module(args: list[str]) -> subprocess.CompletedProcess:
    # No GPU section (it would train a BERT-base), one thread per process on the shared CPUs.
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_prep_scaling_runs_and_writes_its_json(tiny_inputs, tmp_path):
    impls = ["bertflow-merge", "bertflow-shards", "hf-recipe"]
    run_module(["bench.prep_scaling", "--inputs", str(tiny_inputs["squad"]), "--nprocs", "1",
                "--impls", *impls, "--out", str(tmp_path)])
    report = json.loads((tmp_path / "prep_scaling.json").read_text())
    rows = report["rows"]
    assert sorted(row["impl"] for row in rows) == impls
    assert {row["input"] for row in rows} == {"squad-small.json"} and {row["nproc"] for row in rows} == {1}
    # Both implementations build the same number of train features (run_qa parity), at a measured speed.
    assert len({row["features"] for row in rows}) == 1 and rows[0]["features"] >= tiny_inputs["questions"]
    assert all(row["seconds"] > 0 and row["features_per_second"] > 0 and row["peak_rss_mb"] > 0 for row in rows)
    summary = report["summary"]["squad-small.json"]
    assert summary["bertflow-shards_vs_recipe_at_nproc_1"] > 0 and summary["recipe_best_features_per_second"] > 0
    table = (tmp_path / "prep_scaling.md").read_text().splitlines()
    assert len(table) == 2 + len(impls) and all(line.startswith("| squad-small.json | 1 |") for line in table[2:])
    assert (tmp_path / "prep_scaling.png").stat().st_size > 1000


def test_train_throughput_runs_and_writes_its_json(tiny_inputs, tmp_path, tiny_encoder_dir):
    tiny = tiny_encoder_dir
    out = tmp_path / "train_throughput.json"
    run_module(["bench.train_throughput", "--model", str(tiny), "--steps", "2", "--global-batch-size", "4",
                "--passes", "1", "--squad-json", str(tiny_inputs["squad"]), "--gap-tsv", str(tiny_inputs["gap"]),
                "--variants", "fp32:0", "--json", str(out)])
    report = json.loads(out.read_text())
    assert report["cuda"] is None and report["cpu_passes"] == 1 and report["model"] == str(tiny)
    assert set(report["cpu_peak_tflops_measured"]) == {"fp32"} and report["cpu_peak_tflops_measured"]["fp32"] > 0
    runners = ["ours", "ours/stock-modules", "trainer/max_length", "trainer/dynamic"]
    assert [(row["task"], row["attention_dropout"], row["runner"]) for row in report["cpu"]] == [
        (t, 0.0, r) for t in ("squad", "gap") for r in runners]
    for row in report["cpu"]:
        assert (row["steps_measured"], row["batch"], row["precision"]) == (1, 4, "fp32")  # the first step is untimed
        assert row["sequences_per_second"] > 0 and row["tokens_per_second"] > 0
        assert row["model_tflops"] > 0
        assert row["mfu_vs_measured_peak"] == pytest.approx(row["model_tflops"] / report["cpu_peak_tflops_measured"]["fp32"])
        if row["runner"] == "trainer/max_length":
            assert row["speedup_vs_trainer_max_length"] == 1.0
        if row["runner"] == "trainer/dynamic":
            assert row["speedup_vs_trainer_dynamic"] == 1.0


def test_step_profile_shows_where_the_dropout_masks_come_from(tiny_inputs, tmp_path, tiny_encoder_dir_dropout):
    """The op table of a tiny run with dropout: torch's bernoulli_ with the model's own modules,
    train/fast_cpu.py's random_ draws (and no bernoulli_) with them swapped."""
    found = {}
    for fast in ("true", "false"):
        out = tmp_path / f"profile-{fast}.json"
        run_module(["bench.step_profile", "--task", "gap", "--model", str(tiny_encoder_dir_dropout), "--precision",
                    "fp32", "--fast-cpu", fast, "--skip", "0", "--steps", "2", "--global-batch-size", "4",
                    "--squad-json", str(tiny_inputs["squad"]), "--gap-tsv", str(tiny_inputs["gap"]), "--json", str(out)])
        report = json.loads(out.read_text())
        assert report["throughput"]["sequences_per_second"] > 0
        assert sum(op["share"] for op in report["ops"]) == pytest.approx(1.0)
        found[fast] = {op["op"] for op in report["ops"]}
    assert "aten::random_" in found["true"] and "aten::bernoulli_" not in found["true"]
    assert "aten::bernoulli_" in found["false"]


def test_textclass_prep_runs_and_writes_its_json(tmp_path):
    import csv

    with open(shared_data("textclass/bbc-news/train.csv"), newline="", encoding="utf-8") as handle:
        records = list(csv.reader(handle))[:41]  # header + 40 texts
    small = tmp_path / "bbc-small.csv"
    with open(small, "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(records)
    run_module(["bench.textclass_prep", "--input", str(small), "--nprocs", "1", "--out", str(tmp_path)])
    report = json.loads((tmp_path / "textclass_prep.json").read_text())
    assert {row["impl"] for row in report["rows"]} == {"bertflow-shards", "bertflow-merge", "hf-datasets"}
    assert all(row["texts"] == 40 for row in report["rows"])
    assert report["comparisons"] and all(c["identical"] and c["labels_equal"] for c in report["comparisons"])
