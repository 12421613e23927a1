"""bench.race_prep runs end to end on four real RACE articles and writes its JSON (so it cannot rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, shared_data

pytestmark = pytest.mark.fast


def test_race_prep_bench_runs_and_writes_its_json(tmp_path):
    lines = shared_data("race/dev.jsonl").read_text(encoding="utf-8").splitlines()[:4]
    small = tmp_path / "race-small.jsonl"
    small.write_text("\n".join(lines) + "\n", encoding="utf-8")
    questions = sum(len(json.loads(line)["questions"]) for line in lines)
    done = subprocess.run([sys.executable, "-m", "bench.race_prep", "--input", str(small), "--nprocs", "1",
                           "--impls", "bertflow-shards", "hf-datasets", "--max-seq-length", "128",
                           "--out", str(tmp_path)], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "race_prep.json").read_text())
    assert {row["impl"] for row in report["rows"]} == {"bertflow-shards", "hf-datasets"}
    assert all(row["questions"] == questions and row["questions_per_second"] > 0 for row in report["rows"])
    assert report["comparisons"] and all(c["identical"] for c in report["comparisons"])
