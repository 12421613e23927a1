"""The folders' contract (prep.folders): every file of a features, run and evaluation folder is
named there and nowhere else, and the module stays torch-free."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from prep.folders import MANIFEST, EvalFolder, FeaturesFolder, PredictFolder, RunFolder
from tests.conftest import REPO

pytestmark = pytest.mark.fast

PACKAGES = ("prep", "train", "eval", "profiling", "tasks", "bench")
# prep/folders.py names the files. bench/device_run.py runs on the lent GPU machine before anything
# is installed (the standard library only), and its bundle's manifest.json is not one of these folders.
EXCLUDED = (":!prep/folders.py", ":!bench/device_run.py", ":!bench/device_bundle.py")
# These names are never a string of their own, and no folder name is a path step. "model" is
# also a checkpoint key and a table column: only its path steps count.
NAMES = (RunFolder.HEAD, RunFolder.TRAIN_CONFIG, RunFolder.LAUNCH_CONFIG, RunFolder.METRICS, RunFolder.PROGRESS,
         RunFolder.TRAIN_LOG, RunFolder.TENSORBOARD, RunFolder.CHECKPOINTS, RunFolder.LAST_CHECKPOINT,
         RunFolder.BEST_CHECKPOINT, EvalFolder.REPORT, PredictFolder.SUMMARY, MANIFEST)
FOLDERS = (RunFolder.MODEL, RunFolder.TENSORBOARD, RunFolder.CHECKPOINTS)


def _alternatives(names) -> str:
    return "|".join(re.escape(name) for name in names)


def test_no_folder_file_name_outside_prep_folders():
    names, folders = _alternatives(NAMES), _alternatives(FOLDERS)
    pattern = "|".join([f'"({names})"', f"'({names})'",  # a name as a string of its own
                        f"/ *[\"']({folders})[\"'/]", f"[\"']({folders})/"])  # a folder as a path step
    found = subprocess.run(["git", "grep", "-nE", pattern, "--", *(f"{p}/*.py" for p in PACKAGES), *EXCLUDED],
                           cwd=REPO, capture_output=True, text=True)
    assert found.returncode == 1 and found.stdout == "", found.stdout  # 1: git grep found nothing


def test_paths_of_each_folder(tmp_path):
    run = RunFolder(str(tmp_path))
    assert run.path == tmp_path  # a str becomes a Path
    assert {name: getattr(run, name).relative_to(tmp_path).as_posix() for name in (
        "model", "head", "train_config", "launch_config", "metrics", "progress", "train_log", "tensorboard",
        "checkpoints", "last_checkpoint", "best_checkpoint")} == {
        "model": "model", "head": "head.safetensors", "train_config": "train_config.json",
        "launch_config": "launch_config.json", "metrics": "metrics.json", "progress": "progress.json",
        "train_log": "train.log", "tensorboard": "tb", "checkpoints": "checkpoints",
        "last_checkpoint": "checkpoints/last.pt", "best_checkpoint": "checkpoints/best.pt"}
    out = EvalFolder(tmp_path / "eval")
    assert (out.metrics, out.report, out.manifest) == tuple(
        tmp_path / "eval" / name for name in ("metrics.json", "report.md", "manifest.json"))
    assert FeaturesFolder(tmp_path).manifest == tmp_path / "manifest.json"
    predicted = PredictFolder(tmp_path / "predict")
    assert (predicted.summary, predicted.manifest) == (tmp_path / "predict" / "summary.json",
                                                       tmp_path / "predict" / "manifest.json")
    stem = FeaturesFolder.STEM.format(dataset="gap", split="dev")
    assert [FeaturesFolder.MERGED_FILE.format(stem=stem), FeaturesFolder.WORKER_FILE.format(stem=stem, worker=3),
            FeaturesFolder.EMPTY_FILE.format(stem=stem)] == ["gap-dev.arrow", "gap-dev-w003.arrow", "gap-dev-empty.arrow"]


def test_prep_folders_imports_without_torch():
    code = "import prep.folders, sys; assert 'torch' not in sys.modules, 'prep.folders imported torch'"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
