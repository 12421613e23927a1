"""Sweep end to end on a tiny model and 24-row slices of GAP: study, report, caching, two workers,
a kill mid-trial, and the test split left alone until the final step."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import luigi
import optuna
import pytest

from pipeline import Sweep
from tests.conftest import REPO, shared_data
from tests.test_pipeline_fullrun import STARTED, configured, slice_gap

SPACE = {"lr": ["log", 1e-4, 1e-2], "epochs": ["int", 1, 2]}


@pytest.fixture(scope="module")
def sweep_setup(tmp_path_factory, tiny_encoder_dir_dropout):
    """Tiny model, GAP slices (the test file NOT yet there), luigi.cfg settings for second-long trials."""
    root = tmp_path_factory.mktemp("sweep")
    data = root / "data"
    data.mkdir()
    inputs = {f"gap_{split}": slice_gap(shared_data(f"gap/gap-{split}.tsv"), data / f"gap-{split}.tsv", 24)
              for split in ("development", "validation")}
    inputs["gap_test"] = data / "gap-test.tsv"  # made only for the final step: nothing may read it before
    model = tiny_encoder_dir_dropout
    config = {
        "inputs": inputs,
        "bertflow": {"runs_dir": root / "runs"},
        "GapFineTuned": dict(epochs=1, global_batch_size=8, device="cpu", select_best="true", calibrate="true",
                             lr=1e-3),
        "GapFeatures": {"max_seq_length": 128},
        "GapEvaluation": {"device": "cpu"},
        "Sweep": {"space": json.dumps(SPACE), "startup_trials": 2, "pruner": "none"},
    }
    return root, model, config


def build(tasks):
    STARTED.clear()
    result = luigi.build(tasks, local_scheduler=True, detailed_summary=True, log_level="WARNING")
    return result, sorted(STARTED)


def write_cfg(sections: dict, path: Path) -> Path:
    path.write_text("".join(f"[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                            for name, values in sections.items()))
    return path


def sweep_cli(cfg: Path, model: Path, *args: str, **popen) -> subprocess.Popen:
    """``luigi --module pipeline Sweep --task gap ...`` in its own process. Several Luigi workers fork
    task processes, and a fork of this pytest process, whose earlier tests ran torch's OpenMP pool,
    hangs at its first parallel op (libgomp is not fork-safe); a fresh luigi process has run no torch."""
    command = [sys.executable, "-m", "luigi", "--module", "pipeline", "Sweep", "--task", "gap", *args,
               "--model-dir", str(model), "--nproc", "1", "--local-scheduler"]
    env = {**os.environ, "LUIGI_CONFIG_PATH": str(cfg), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, cwd=REPO, **popen)


def study_rows(db: Path, study: str | None = None) -> list[tuple]:
    """(number, state) of every trial of ``study`` (default: the only one) in the SQLite database, read with sqlite3."""
    with sqlite3.connect(db) as connection:
        names = [name for (name,) in connection.execute("SELECT study_name FROM studies")]
        if study is None:
            assert len(names) == 1, names
            study = names[0]
        return connection.execute("SELECT t.number, t.state FROM trials t JOIN studies s ON t.study_id = s.study_id "
                                  "WHERE s.study_name = ? ORDER BY t.number", (study,)).fetchall()


def slot_records(sweep_dir: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((sweep_dir / "trials").glob("slot-*.json"))]


def test_sweep_two_workers_report_cache_then_final_on_test(sweep_setup, monkeypatch, tmp_path):
    root, model, config = sweep_setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    two = sweep_cli(write_cfg(config, tmp_path / "luigi.cfg"), model, "--trials", "3", "--workers", "2",
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = two.communicate(timeout=600)[0]
    assert two.returncode == 0, output[-3000:]
    with configured(config):
        sweep = Sweep(task="gap", trials=3, model_dir=str(model), nproc=1)
        assert sweep.complete()
        # The test split was never touched: its file does not even exist, and nothing asked for it.
        assert not (root / "data" / "gap-test.tsv").exists()
        assert not list((root / "runs" / "features").glob("gap-test-*"))

        db = root / "runs" / "sweeps.db"
        rows = study_rows(db)
        assert [state for _, state in rows] == ["COMPLETE"] * 3
        records = slot_records(sweep.sweep_dir())
        assert sorted(r["trial_number"] for r in records) == [0, 1, 2]  # two workers, never one trial twice
        assert sum(r["baseline"] for r in records) == 1  # the configured recipe is one of the trials
        baseline = next(r for r in records if r["baseline"])
        assert baseline["params"] == {"lr": 1e-3, "epochs": 1}

        report = sweep.report_dir()
        for name in ("report.md", "trials.csv", "sweep.json", "history.png", "importances.png"):
            assert (report / name).is_file(), name
        summary = json.loads((report / "sweep.json").read_text())
        values = [r["value"] for r in summary["ranked"]]
        assert values == sorted(values) and summary["best"]["value"] == values[0]
        assert summary["dashboard"] == f"optuna-dashboard sqlite:///{db}"
        best = summary["best"]
        assert (Path(best["run_dir"]) / "metrics.json").is_file() and (Path(best["eval_dir"]) / "manifest.json").is_file()
        # The objective is the validation log loss: the calibrated held-out loss of the fine-tune.
        finetune = json.loads((Path(best["run_dir"]) / "metrics.json").read_text())
        assert best["value"] == pytest.approx(finetune["calibration"]["eval_loss_after"])
        assert json.loads((Path(best["eval_dir"]) / "metrics.json").read_text())["inputs"]["data"]["path"].endswith(
            "gap-validation.tsv")

        # Again: no trial is added, nothing runs.
        result, started = build([Sweep(task="gap", trials=3, model_dir=str(model), nproc=1)])
        assert started == [] and len(study_rows(db)) == 3

        # The final step, and only it, reads the test split: the best settings retrained (1 seed, to stay quick).
        slice_gap(shared_data("gap/gap-test.tsv"), root / "data" / "gap-test.tsv", 24)
        final = Sweep(task="gap", trials=3, final_seeds=1, model_dir=str(model), nproc=1)
        result, started = build([final])
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
        assert "SweepTrial" not in started and "GapFeatures" in started  # the test features, now
        payload = json.loads(Path(final.output().path).read_text())
        assert payload["best"]["trial_number"] == best["trial_number"] and payload["seeds"] == [1]
        assert payload["test"]["runs"] == 1 and (Path(final.final_dir()) / "gap.md").is_file()
        for eval_dir in payload["eval_dirs"]:
            metrics = json.loads((Path(eval_dir) / "metrics.json").read_text())
            assert metrics["inputs"]["data"]["path"].endswith("gap-test.tsv")
            assert metrics["train_config"]["lr"] == best["params"]["lr"]
        assert len(study_rows(db)) == 3  # the final step is no trial


def test_sweep_killed_mid_trial_then_rerun_keeps_count(sweep_setup, tmp_path):
    """SIGKILL the luigi process while a trial trains; the rerun redoes that trial and stops at the count."""
    root, model, config = sweep_setup
    runs = root / "runs"  # shared with the test above: its features are cached here
    # Another seed (another study), no baseline: both trials train new settings.
    sections = {**config, "Sweep": {**config["Sweep"], "seed": 7, "baseline": "false"}}
    cfg = write_cfg(sections, tmp_path / "luigi.cfg")
    with configured(sections):
        study = Sweep(task="gap", trials=2, model_dir=str(model), nproc=1).resolved_study_name()
    trained_before = set(runs.glob("finetune-*/progress.json"))
    db = runs / "sweeps.db"
    process = sweep_cli(cfg, model, "--trials", "2", start_new_session=True,
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # kill the run while its second trial trains (that trial is RUNNING in the study)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if db.is_file() and [s for _, s in study_rows(db, study)] == ["COMPLETE", "RUNNING"] and \
                    len(set(runs.glob("finetune-*/progress.json")) - trained_before) == 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep never reached its second trial")
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert study_rows(db, study) == [(0, "COMPLETE"), (1, "RUNNING")]
    interrupted = optuna.load_study(study_name=study, storage=f"sqlite:///{db}").trials[1].params

    rerun = sweep_cli(cfg, model, "--trials", "2", stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = rerun.communicate(timeout=300)[0]
    assert rerun.returncode == 0, output[-3000:]
    # The interrupted trial redone (same number, same settings), not a third one.
    assert study_rows(db, study) == [(0, "COMPLETE"), (1, "COMPLETE")]
    records = slot_records(runs / "sweep" / study)
    assert sorted(r["trial_number"] for r in records) == [0, 1]
    assert next(r for r in records if r["trial_number"] == 1)["params"] == interrupted
    assert all((Path(r["run_dir"]) / "metrics.json").is_file() for r in records)


def test_pruned_trial_is_recorded_as_pruned_and_its_folder_stays_incomplete(sweep_setup, monkeypatch):
    """Two earlier trials (no slot of this sweep) reached a held-out loss of 0.01 after one epoch:
    the median pruner stops a real 2-epoch trial after its first."""
    root, model, config = sweep_setup
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    settings = dict(task="gap", trials=1, model_dir=str(model), nproc=1, seed=11, baseline=False,
                    space={"epochs": ["choice", 2], "lr": ["log", 1e-3, 2e-3]}, pruner="median",
                    pruner_startup_trials=2, pruner_warmup_epochs=0)
    with configured(config):
        sweep = Sweep(**settings)
        study = sweep.open_study(0)
        for _ in range(2):
            trial = study.ask()
            trial.report(0.01, 1)
            study.tell(trial, 0.01)
        result, started = build([sweep])
        assert result.status == luigi.execution_summary.LuigiStatusCode.SUCCESS, result.summary_text
        (record,) = slot_records(sweep.sweep_dir())
        assert record["state"] == "PRUNED" and list(record["intermediate"]) == ["1"]
        assert not (Path(record["run_dir"]) / "metrics.json").exists()
        assert study_rows(root / "runs" / "sweeps.db", study.study_name)[-1] == (2, "PRUNED")
        summary = json.loads((sweep.report_dir() / "sweep.json").read_text())
        assert summary["pruned"] == 1 and summary["best"] is None
