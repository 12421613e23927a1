"""Every task's prep command, derived from its :class:`tasks.spec.PrepSpec`: ``python -m prep <task>``.

:func:`prep_command` builds the parser: the input and output folder, the tokenizer, one flag per
field of the task's prep config dataclass (its defaults and help, as the ``<Task>Features`` Luigi
parameters have them), and the pool's flags (workers, sink, the task's chunk size with the
default of its ``prepare``, logging). :func:`run_prep_cli` runs it: logging set up, the config
built (a bad value is a usage error, exit 2), the stage run with a progress bar, the task's
one-line summary printed, and bad input (the task's ``input_errors``, a missing file) printed as
one ``<prog>: error: ...`` line with exit status 1, not a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
import inspect
from typing import Any, Callable

from prep.cli_args import add_dataclass_arguments, values_for
from prep.models import resolve_model
from prep.pool import MODES, available_cpus
from prep.stage import tqdm_progress

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def prep_parser(prog: str, doc: str | None, input_help: str,
                tokenizer_help: str = "model folder with a fast tokenizer, or a Hugging Face Hub id "
                                      "(org/name[@revision]) (default: the packaged MiniLM)") -> argparse.ArgumentParser:
    """A parser with the positional ``input`` and ``out_dir`` and ``--model-dir`` / ``--tokenizer``;
    its description is the first paragraph of ``doc`` (the task module's docstring)."""
    parser = argparse.ArgumentParser(prog=prog, description=(doc or "").split("\n\n")[0])
    parser.add_argument("input", type=Path, help=input_help)
    parser.add_argument("out_dir", type=Path, help="output folder (replaced atomically)")
    parser.add_argument("--model-dir", "--model", "--tokenizer", dest="tokenizer", default=None, help=tokenizer_help)
    return parser


def add_pool_arguments(parser: argparse.ArgumentParser, chunk: tuple[str, int, str] | None = None,
                       nproc_default: int | None = None, nproc_help: str = "worker processes") -> None:
    """``--nproc``, ``--mode``, the chunk-size flag (``(flag, default, help)``: items per pool task),
    ``--reserve-cpus``, ``--quiet`` and ``--log-level``."""
    nproc = max(1, available_cpus() - 1) if nproc_default is None else nproc_default
    parser.add_argument("--nproc", type=int, default=nproc, help=nproc_help)
    parser.add_argument("--mode", choices=MODES, default="shards",
                        help="shards: one Arrow file per worker; merge: one file written by the main process")
    if chunk is not None:
        flag, default, help_text = chunk
        parser.add_argument(flag, type=int, default=default, help=help_text)
    parser.add_argument("--reserve-cpus", type=int, default=1, help="CPUs kept free when capping --nproc")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or info logs")
    parser.add_argument("--log-level", default=None, choices=LOG_LEVELS, help="default: INFO, or WARNING with --quiet")
    parser.set_defaults(_chunk_flag=chunk[0] if chunk else None)


def run_prep_cli(parser: argparse.ArgumentParser, argv: list[str] | None, make_config: Callable[[Any], Any],
                 prepare: Callable[[Any, Any, Callable], dict], summarize: Callable[[dict, Path], str],
                 input_errors: tuple[type[BaseException], ...]) -> int:
    """Parse ``argv``, then ``prepare(args, config, progress)`` and print ``summarize(manifest, out_dir)``.

    ``make_config(args)`` raising TypeError / ValueError, or a chunk size below 1, is a usage error
    (exit 2); ``input_errors`` (and FileNotFoundError) from ``prepare`` print one line and return 1.
    """
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level or ("WARNING" if args.quiet else "INFO"), format="%(levelname)s %(message)s")
    try:
        config = make_config(args)
    except (TypeError, ValueError) as err:
        parser.error(str(err))
    if args._chunk_flag is not None:
        size = getattr(args, args._chunk_flag.lstrip("-").replace("-", "_"))
        if size < 1:
            parser.error(f"{args._chunk_flag} must be >= 1, got {size}")
    try:
        manifest = prepare(args, config, tqdm_progress(args.quiet))
    except (*input_errors, FileNotFoundError) as err:
        # Bad input, not a bug: say what and where, without a traceback.
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 1
    print(summarize(manifest, args.out_dir))
    return 0


def chunk_argument(prep) -> tuple[str, int, str] | None:
    """``(flag, default, help)`` of the task's chunk size: its ``prepare``'s ``chunk_param``, with that
    parameter's default (one home for it), or None."""
    if prep.chunk_param is None:
        return None
    default = inspect.signature(prep.prepare).parameters[prep.chunk_param].default
    return "--" + prep.chunk_param.replace("_", "-"), default, prep.chunk_help


def prep_command(name: str, description: str, prep, argv: list[str] | None = None) -> int:
    """``python -m prep <name>``: the command of the task whose prep part is ``prep``."""
    parser = prep_parser(f"python -m prep {name}", description, prep.input_help)
    add_dataclass_arguments(parser, prep.config)
    chunk = chunk_argument(prep)
    add_pool_arguments(parser, chunk, nproc_default=prep.default_nproc)
    chunk_kwargs = (lambda args: {prep.chunk_param: getattr(args, prep.chunk_param)}) if chunk else (lambda args: {})
    return run_prep_cli(
        parser, argv, lambda args: prep.config(**values_for(prep.config, args)),
        # The model resolved here, once (prep.models): a Hub id becomes its snapshot folder in the cache.
        lambda args, config, progress: prep.prepare(args.input, args.out_dir,
                                                    resolve_model(args.tokenizer) if args.tokenizer else None,
                                                    config, nproc=args.nproc,
                                                    mode=args.mode, reserve_cpus=args.reserve_cpus, progress=progress,
                                                    **chunk_kwargs(args)),
        prep.summarize, prep.input_errors)
