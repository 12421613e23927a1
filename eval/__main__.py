"""Command line of the evaluation stage: one sub-command per registered task, plus the tools.

    python -m eval squad --model runs/train-squad --features runs/squad-dev --data ../shared/data/squad/dev-v1.1.json --out runs/eval-squad
    python -m eval squad ... --version-2-with-negative --null-score-diff-threshold -1.5
    python -m eval gap --model runs/train-gap --features runs/gap-test --data ../shared/data/gap/gap-test.tsv --out runs/eval-gap
    python -m eval compare runs/eval-squad-a runs/eval-squad-b --out runs/comparison.md
    python -m eval aggregate runs/eval/gap-* --by head --ensemble --out docs/results/gap.md
    python -m eval score-squad --data dev-v1.1.json --predictions runs/eval-squad/predictions.json
    python -m eval score-gap --data gap-test.tsv --predictions runs/eval-gap/submission.csv
    python -m eval predict squad --model runs/train-squad --data questions.json --out runs/predict-squad
    python -m eval predict textclass --model runs/train-news --data new.csv --text-column Text --out runs/predict-news

A task's sub-command takes the task's evaluation settings as flags (its eval config's fields,
``python -m eval <task> --help``) or from ``--config FILE.json``; so does ``predict <task>``
(predictions on new, unlabelled data: eval/predict.py), with the flags that say how to read the
file where the task has them (textclass's columns, as in training).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from tasks import all_tasks
from prep.cli_args import add_dataclass_arguments, config_file_defaults, values_for
from prep.pool import available_cpus

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _add_predict_commands(commands, argv: list[str] | None) -> None:
    """``predict <task>``: one sub-command per task that predicts on new data."""
    predict = commands.add_parser("predict", help="predictions of a finished run on new data without labels")
    tasks = predict.add_subparsers(dest="predict_task", required=True)
    for spec in all_tasks():
        part = spec.eval.predict
        if part is None:
            continue
        sub = tasks.add_parser(spec.name, help=f"{spec.description}: predictions on new data")
        sub.add_argument("--model", "--run-dir", dest="run_dir", required=True,
                         help="the fine-tuned run folder (what train wrote: its --out)")
        sub.add_argument("--data", required=True, help=part.input_help)
        sub.add_argument("--out", "--out-dir", dest="out_dir", required=True, help="output folder (replaced atomically)")
        sub.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: cuda when available)")
        sub.add_argument("--nproc", type=int, default=max(1, available_cpus() - 1), help="prep processes")
        sub.add_argument("--quiet", action="store_true", help="no progress bars")
        sub.add_argument("--config", default=None, help="JSON object of evaluation settings (flags override it)")
        sub.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
        add_dataclass_arguments(sub, spec.eval.config, defaults=config_file_defaults(argv, spec.eval.config),
                                negative_aliases={"max_context_only": "--no-max-context"})
        if part.options is not None:
            add_dataclass_arguments(sub, part.options)


def _predict(spec, args) -> dict:
    from eval.predict import make_options, run_prediction, tqdm_batches
    from prep.stage import tqdm_progress

    cfg = spec.eval.config(**values_for(spec.eval.config, args))
    part = spec.eval.predict
    options = make_options(part, values_for(part.options, args)) if part.options is not None else None
    disable = True if args.quiet else None  # None: bars on a terminal only
    summary = run_prediction(spec, args.run_dir, args.data, args.out_dir, cfg, options, device=args.device,
                             nproc=args.nproc, prep_progress=tqdm_progress(disable), progress=tqdm_batches(disable))
    return {"out": args.out_dir, "files": summary["files"], "counts": summary["counts"],
            "skip_reasons": summary["skip_reasons"]}


def _parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
    commands = parser.add_subparsers(dest="command", required=True)
    for spec in all_tasks():
        sub = commands.add_parser(spec.name, help=f"{spec.description}: predictions, metrics, report")
        sub.add_argument("--model", "--run-dir", dest="run_dir", required=True,
                         help="the fine-tuned run folder (what train wrote: its --out)")
        sub.add_argument("--features", "--features-dir", dest="features_dir", required=True,
                         help="the eval-split features folder prep wrote")
        sub.add_argument("--data", required=True, help="the benchmark file the features were built from")
        sub.add_argument("--out", "--out-dir", dest="out_dir", required=True, help="output folder (replaced atomically)")
        sub.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: cuda when available)")
        sub.add_argument("--config", default=None, help="JSON object of evaluation settings (flags override it)")
        sub.add_argument("--log-level", default="INFO", choices=LOG_LEVELS)
        add_dataclass_arguments(sub, spec.eval.config, defaults=config_file_defaults(argv, spec.eval.config),
                                negative_aliases={"max_context_only": "--no-max-context"})
        if spec.eval.score_file is not None:
            score = commands.add_parser(f"score-{spec.name}", help="score a predictions file like the official scorer")
            score.add_argument("--data", required=True)
            score.add_argument("--predictions", required=True)
            spec.eval.score_file_args(score)

    _add_predict_commands(commands, argv)

    compare = commands.add_parser("compare", help="table of several evaluation folders")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", default=None, help="also write the table here (.md, .csv or .json)")

    aggregate = commands.add_parser("aggregate", help="mean / spread over seeds, per group of runs")
    aggregate.add_argument("runs", nargs="+", metavar="RUN_DIR")
    aggregate.add_argument("--by", nargs="+", default=["head"],
                           help="training settings that define a group (default: head)")
    aggregate.add_argument("--ensemble", action="store_true",
                           help="also score each group's averaged probabilities (tasks that have them, e.g. GAP)")
    aggregate.add_argument("--out", default=None, help="write the table to this .md and the numbers to the .json beside it")
    return parser


def main(argv: list[str] | None = None) -> int:
    from tasks import get_task

    args = _parser(argv).parse_args(argv)
    evals = {spec.name: spec.eval for spec in all_tasks()}
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "compare":
            from eval.compare import compare_runs

            print(compare_runs(args.runs, evals, args.out))
        elif args.command == "aggregate":
            from eval.aggregate import aggregate_to_files
            from eval.run import runs_task

            print(aggregate_to_files(args.runs, evals[runs_task(args.runs)], args.out, args.by, args.ensemble))
        elif args.command == "predict":
            print(json.dumps(_predict(get_task(args.predict_task), args), indent=2))
        elif args.command.startswith("score-"):
            print(json.dumps(get_task(args.command[len("score-"):]).eval.score_file(args), indent=2))
        else:
            from eval.run import run_evaluation

            spec = get_task(args.command)
            cfg = spec.eval.config(**values_for(spec.eval.config, args))
            summary = run_evaluation(spec, args.run_dir, args.features_dir, args.data, args.out_dir, cfg,
                                     device=args.device)
            print(json.dumps(summary["metrics"], indent=2))
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
