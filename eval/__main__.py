"""Command line of the evaluation stage.

    python -m eval squad --model runs/train-squad --features runs/squad-dev --data ../shared/data/squad/dev-v1.1.json --out runs/eval-squad
    python -m eval squad ... --version-2-with-negative --null-score-diff-threshold -1.5
    python -m eval gap --model runs/train-gap --features runs/gap-test --data ../shared/data/gap/gap-test.tsv --out runs/eval-gap
    python -m eval compare runs/eval-squad-a runs/eval-squad-b --out runs/comparison.md
    python -m eval aggregate runs/eval/gap-* --by head --ensemble --out docs/results/gap.md
    python -m eval score-squad --data dev-v1.1.json --predictions runs/eval-squad/predictions.json
    python -m eval score-gap --data gap-test.tsv --predictions runs/eval-gap/submission.csv
"""

from __future__ import annotations

import argparse
import json
import sys

from eval.config import GapEvalConfig, SquadEvalConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m eval", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    def model_args(sub):
        sub.add_argument("--model", required=True, help="the folder train wrote (its --out)")
        sub.add_argument("--features", required=True, help="the eval-split features folder prep wrote")
        sub.add_argument("--data", required=True, help="the benchmark file the features were built from")
        sub.add_argument("--out", required=True, help="output folder (replaced atomically)")
        sub.add_argument("--batch-size", type=int, default=64)
        sub.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: cuda when available)")

    squad = commands.add_parser("squad", help="SQuAD v1.1 / v2.0: predictions.json, EM / F1, report")
    model_args(squad)
    defaults = SquadEvalConfig()
    squad.add_argument("--n-best-size", type=int, default=defaults.n_best_size)
    squad.add_argument("--max-answer-length", type=int, default=defaults.max_answer_length)
    squad.add_argument("--version-2-with-negative", action=argparse.BooleanOptionalAction, default=None,
                       help="SQuAD 2.0 scoring with no-answer predictions (default: follow the data)")
    squad.add_argument("--null-score-diff-threshold", type=float, default=defaults.null_score_diff_threshold)
    squad.add_argument("--no-max-context", dest="max_context_only", action="store_false",
                       help="score span starts in every window, not only where they have most context")

    gap = commands.add_parser("gap", help="GAP: submission.csv, GAP TSV, log loss / F1 / bias, report")
    model_args(gap)

    compare = commands.add_parser("compare", help="table of several evaluation folders")
    compare.add_argument("runs", nargs="+", metavar="RUN_DIR")
    compare.add_argument("--out", default=None, help="also write the table here (.md, .csv or .json)")

    aggregate = commands.add_parser("aggregate", help="mean / spread over seeds, per group of runs")
    aggregate.add_argument("runs", nargs="+", metavar="RUN_DIR")
    aggregate.add_argument("--by", nargs="+", default=["head"],
                           help="training settings that define a group (default: head)")
    aggregate.add_argument("--ensemble", action="store_true", help="GAP: also score each group's averaged probabilities")
    aggregate.add_argument("--out", default=None, help="write the table to this .md and the numbers to the .json beside it")

    score_squad = commands.add_parser("score-squad", help="score a predictions.json like the official scripts")
    score_squad.add_argument("--data", required=True)
    score_squad.add_argument("--predictions", required=True)
    score_squad.add_argument("--na-probs", default=None, help="v2: null_odds.json (the official --na-prob-file)")
    score_squad.add_argument("--na-prob-thresh", type=float, default=1.0)
    score_squad.add_argument("--version-2-with-negative", action=argparse.BooleanOptionalAction, default=None)

    score_gap = commands.add_parser("score-gap", help="score a submission.csv or a GAP system TSV")
    score_gap.add_argument("--data", required=True)
    score_gap.add_argument("--predictions", required=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "squad":
            from eval.run import run_squad_eval

            cfg = SquadEvalConfig(
                n_best_size=args.n_best_size, max_answer_length=args.max_answer_length,
                version_2_with_negative=args.version_2_with_negative,
                null_score_diff_threshold=args.null_score_diff_threshold,
                max_context_only=args.max_context_only, batch_size=args.batch_size,
            )
            summary = run_squad_eval(args.model, args.features, args.data, args.out, cfg, device=args.device)
            print(json.dumps(summary["metrics"], indent=2))
        elif args.command == "gap":
            from eval.run import run_gap_eval

            summary = run_gap_eval(args.model, args.features, args.data, args.out,
                                   GapEvalConfig(batch_size=args.batch_size), device=args.device)
            print(json.dumps(summary["metrics"], indent=2))
        elif args.command == "compare":
            from eval.compare import compare_runs

            print(compare_runs(args.runs, args.out))
        elif args.command == "aggregate":
            from eval.aggregate import aggregate_to_files

            print(aggregate_to_files(args.runs, args.out, args.by, args.ensemble))
        elif args.command == "score-squad":
            from eval.score_files import score_squad_file

            print(json.dumps(score_squad_file(args.data, args.predictions, args.na_probs,
                                              args.version_2_with_negative, args.na_prob_thresh), indent=2))
        else:
            from eval.score_files import score_gap_file

            print(json.dumps(score_gap_file(args.data, args.predictions), indent=2))
    except (ValueError, KeyError, FileNotFoundError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
