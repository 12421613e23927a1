"""What a refactoring must not change, recorded before it and checked after (tests/test_parity.py).

- ``artifact_names()``: the output path of every task in the DAG of each published command
  (docs/results: GapResults, FullRun's SQuAD subset, TextClassification, GlueResults, RaceResults,
  the MPNet runs, make run's FullRun) under luigi.offline.cfg, as ``{command: {task id: path}}``.
  A folder name is a cache key: a changed name re-runs work and orphans the published evidence.
- ``training_losses()``: per-step training losses and per-epoch held-out figures of a short,
  fixed-seed fine-tune of every task (tiny in-process encoder, the task's synthetic features),
  run through ``python -m train --config FILE``, the trainer's entry point.

    python -m tests.parity --record      # rewrite tests/golden/*.json (only before a change meant to keep them)
    python -m tests.parity               # compare, printing any difference
"""

from __future__ import annotations

import configparser
import contextlib
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GOLDEN = Path(__file__).resolve().parent / "golden"
NAMES_FILE = GOLDEN / "artifact_names.json"
LOSSES_FILE = GOLDEN / "losses.json"

BBC = "../shared/data/textclass/bbc-news/train.csv"
MPNET = "models/all-mpnet-base-v2"

# The commands docs/results publish (and make run's), as Luigi command lines.
PUBLISHED = {
    "make run": ["FullRun"],
    "gap results": ["GapResults", "--GapFineTuned-epochs", "2", "--GapFineTuned-lr", "1e-4",
                    "--GapFineTuned-global-batch-size", "16", "--GapFineTuned-select-best", "true",
                    "--GapFineTuned-calibrate", "true"],
    "squad subset": ["FullRun", "--gap", "false", "--profile", "false", "--squad-train-articles", "32",
                     "--squad-dev-articles", "48", "--SquadFeatures-max-seq-length", "256",
                     "--SquadFineTuned-epochs", "1", "--SquadFineTuned-lr", "1e-4"],
    "squad full": ["FullRun", "--gap", "false", "--profile", "false", "--squad-train-articles", "0",
                   "--squad-dev-articles", "0", "--SquadFineTuned-epochs", "2"],
    "squad v2 features": ["SquadFeatures", "--data", "squad-dev-v2.0", "--split", "eval", "--max-articles", "8",
                          "--max-seq-length", "256"],
    "textclass fold": ["TextClassification", "--data", BBC, "--text-column", "Text", "--label-column", "Category",
                       "--id-column", "ArticleId", "--TextclassFeatures-fold", "true", "--TextclassFineTuned-seed",
                       "1", "--nproc", "1"],
    "textclass no fold": ["TextClassification", "--data", BBC, "--text-column", "Text", "--label-column",
                          "Category", "--id-column", "ArticleId", "--no-fold", "--TextclassFineTuned-seed", "2"],
    "glue": ["GlueResults", "--tasks", "cola,sst2,mrpc,stsb,rte,wnli", "--seeds", "3"],
    "race subset": ["RaceResults", "--nproc", "1", "--seeds", "[1, 2, 3]", "--FullRun-race-train-questions", "96",
                    "--FullRun-race-dev-questions", "24", "--FullRun-race-test-questions", "0",
                    "--RaceFeatures-max-seq-length", "128", "--RaceFeatures-every-nth", "38",
                    "--RaceFineTuned-epochs", "1", "--RaceFineTuned-global-batch-size", "8",
                    "--RaceFineTuned-lr", "5e-5"],
    "gap mpnet": ["GapResults", "--model-dir", MPNET, "--heads", '["multiply"]', "--seeds", "[1, 2, 3]",
                  "--GapFineTuned-epochs", "2", "--GapFineTuned-lr", "3e-5", "--GapFineTuned-global-batch-size",
                  "16", "--GapFineTuned-precision", "bf16", "--GapFineTuned-select-best", "true",
                  "--GapFineTuned-calibrate", "true"],
    "evaluation by path": ["Evaluation", "--task", "squad", "--run-dir", "runs/finetune-squad-span-2d2bde60b3",
                           "--features-dir", "runs/features/squad-eval-71b53a106bae", "--data", "squad-dev-v2.0"],
    "profile": ["Profile", "--task", "squad"],
}


@contextlib.contextmanager
def offline_inputs():
    """luigi.offline.cfg's [inputs] (the data under ../shared/data) for the duration of a block."""
    from tests.conftest import luigi_config

    parser = configparser.ConfigParser()
    parser.read(REPO / "luigi.offline.cfg")
    with luigi_config("inputs", **dict(parser["inputs"])):
        yield


def _outputs(task, runs: str) -> list[str]:
    import luigi

    paths = (target.path for target in luigi.task.flatten(task.output()) if hasattr(target, "path"))
    return sorted(path.replace(runs, "<runs>") for path in paths)


def _walk(argv: list[str], runs: str) -> tuple[dict[str, list[str]], list]:
    import luigi
    from luigi.cmdline_parser import CmdlineParser

    from pipeline import Splits

    found: dict[str, list[str]] = {}
    splits = []
    with CmdlineParser.global_instance(argv) as parser:
        stack = [parser.get_task_obj()]
        while stack:
            task = stack.pop()
            if task.task_id in found:
                continue
            if isinstance(task, Splits):
                splits.append(task)
            try:
                found[task.task_id] = _outputs(task, runs)
            except FileNotFoundError as err:  # named after a file an upstream task writes
                found[task.task_id] = [f"<missing: {err}>".replace(runs, "<runs>")]
            stack.extend(luigi.task.flatten(task.requires()))
    return found, splits


def dag_outputs(argv: list[str], runs: str) -> dict[str, list[str]]:
    """``{task id: [output paths]}`` over the whole DAG of the Luigi command line ``argv``; the
    user-data splits it needs (cheap file splits) are written first, so what is named after them
    has its real name."""
    import luigi

    found, splits = _walk(argv, runs)
    if splits:
        luigi.build(splits, local_scheduler=True, log_level="WARNING")
        found, _ = _walk(argv, runs)
    return found


def artifact_names() -> dict[str, dict[str, list[str]]]:
    """Run from a scratch folder laid out like a checkout (``runs/`` inside, ``../shared`` beside it),
    so the relative paths users type (``--data ../shared/...``, runs_dir ``runs``) hash as theirs do."""
    import os

    import pipeline  # noqa: F401 - registers the task classes

    import pipeline.finetune

    here = os.getcwd()
    # The published runs trained in fp32 on CPUs (precision auto there); a CPU with native bf16 now
    # trains auto runs in bf16, under other names: the names compared are those of the published kind.
    fp32_cpu, pipeline.finetune.cpu_native_bf16 = pipeline.finetune.cpu_native_bf16, lambda: False
    with tempfile.TemporaryDirectory(prefix="parity-") as scratch, offline_inputs():
        (Path(scratch) / "shared").symlink_to(REPO.parent / "shared")
        work = Path(scratch) / "checkout"
        work.mkdir()
        os.chdir(work)
        try:
            return {name: dag_outputs(argv, str(work / "runs")) for name, argv in PUBLISHED.items()}
        finally:
            os.chdir(here)
            pipeline.finetune.cpu_native_bf16 = fp32_cpu


# --- fixed-seed training ------------------------------------------------------------------
TASKS = ("gap", "squad", "textclass", "race", "glue")


def _train_values(task: str, features: Path, eval_features: Path, model: Path, out: Path, calibrate: bool) -> dict:
    return dict(task=task, features_dir=str(features), eval_features_dir=str(eval_features), run_dir=str(out),
                model_dir=str(model), precision="fp32", global_batch_size=8, per_device_batch_size=4, epochs=2,
                lr=1e-3, seed=7, log_every_n_steps=1, progress_bar=False, select_best=True, calibrate=calibrate,
                save_every_n_steps=0)


def training_losses(work: Path | None = None) -> dict[str, dict]:
    """Per task: ``{"train": [per-step loss], "eval": [per-epoch held-out records], "selected", "calibration"}``."""
    import torch

    from tasks import get_task
    from train.__main__ import main as train_main
    from train.testing import make_tiny_model_dir, write_feature_dir

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    results = {}
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        root = Path(work or tmp)
        model = make_tiny_model_dir(root / "tiny", dropout=0.1)
        try:
            for task in TASKS:
                spec = get_task(task).train
                info = spec.synthetic_data_info()
                features = write_feature_dir(root / f"{task}-train", spec.synthetic_features(48, seed=0), task,
                                             "train", 64, input_info=info)
                held_out = write_feature_dir(root / f"{task}-eval", spec.synthetic_features(16, seed=1), task,
                                             "train", 64, input_info=info)
                out = root / f"run-{task}"
                config = root / f"{task}.json"
                config.write_text(json.dumps(_train_values(task, features, held_out, model, out, spec.calibratable)))
                code = train_main(["--config", str(config), "--log-level", "WARNING"])
                if code != 0:
                    raise RuntimeError(f"python -m train --config {config} exited {code}")
                metrics = json.loads((out / "metrics.json").read_text())
                results[task] = {
                    "train": [entry["loss"] for entry in metrics["train_loss_history"]],
                    "eval": [{k: v for k, v in entry.items() if not k.endswith("_s")} for entry in metrics["eval"]],
                    "selected": metrics["selected"], "calibration": metrics["calibration"],
                }
        finally:
            torch.set_num_threads(threads)
    return results


def output_lists(dag: dict[str, list[str]]) -> list[tuple[str, ...]]:
    """A DAG's outputs, task by task, without the scheduler ids: what names must not change."""
    return sorted(tuple(paths) for paths in dag.values())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # As under pytest (tests/conftest.py): a model folder that is missing is looked for in the Hugging
    # Face cache alone, never on the Hub, so the pending reasons recorded are the same everywhere.
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    names, losses = artifact_names(), training_losses()
    if "--record" in argv:
        GOLDEN.mkdir(exist_ok=True)
        NAMES_FILE.write_text(json.dumps(names, indent=1, sort_keys=True) + "\n")
        LOSSES_FILE.write_text(json.dumps(losses, indent=1, sort_keys=True) + "\n")
        print(f"wrote {NAMES_FILE} ({sum(map(len, names.values()))} tasks) and {LOSSES_FILE}")
        return 0
    same = True
    recorded = json.loads(NAMES_FILE.read_text())
    if {k: output_lists(v) for k, v in names.items()} != {k: output_lists(v) for k, v in recorded.items()}:
        same = False
        print("artifact names differ")
    if losses != json.loads(LOSSES_FILE.read_text()):
        same = False
        print("losses differ")
    print("identical" if same else "DIFFERENT")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
