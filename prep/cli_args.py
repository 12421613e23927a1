"""Command lines derived from a stage's config dataclass: one flag per field, spelled like the field.

``--global-batch-size`` sets ``global_batch_size``; ``--help`` shows every field with its
default and the help text in the field's metadata. Booleans get ``--flag`` / ``--no-flag``.
``--config FILE.json`` (:func:`parse_config`) fills the fields from a JSON object first (the
``train_config.json`` a run writes can be given back; keys that are not fields are ignored),
and flags on the command line override it. Older spellings stay as aliases.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Mapping, Sequence

MISSING = dataclasses.MISSING


def _base_type(hint) -> tuple[type, bool]:
    """``(int, True)`` for ``int | None``; ``(str, False)`` for ``str``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0], True
    return hint, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, defaults: Mapping[str, Any] | None = None,
                            aliases: Mapping[str, Sequence[str]] | None = None,
                            negative_aliases: Mapping[str, str] | None = None, skip: Sequence[str] = (),
                            choices: Mapping[str, Sequence[str]] | None = None, typed_only: bool = False) -> None:
    """One argument per field of ``cls`` (dest = field name); ``defaults`` override the field defaults.

    A field without a default (and none in ``defaults``) is a required flag. ``negative_aliases``
    maps a boolean field to an extra switch that sets it False (``--no-bucketing``). ``typed_only``:
    the parsed namespace holds only the flags given on the command line (no defaults, nothing
    required; ``--help`` still shows the field defaults), so the dataclass stays the one source
    of defaults and a ``--config`` file's values are not overwritten by them.
    """
    hints = typing.get_type_hints(cls)
    defaults, aliases, negative_aliases = dict(defaults or {}), dict(aliases or {}), dict(negative_aliases or {})
    choices = dict(choices or {})
    for field in dataclasses.fields(cls):
        if field.name in skip or not field.init:
            continue
        names = ["--" + field.name.replace("_", "-"), *aliases.get(field.name, ())]
        base, optional = _base_type(hints[field.name])
        if field.name in defaults:
            default = defaults[field.name]
        elif field.default is not MISSING:
            default = field.default
        elif field.default_factory is not MISSING:
            default = field.default_factory()
        else:
            default = MISSING
        text = field.metadata.get("help", "")
        if typed_only:
            shown = "required" if default is MISSING else f"default: {default}"
            text, default = f"{text} ({shown})".replace("%", "%%").strip(), argparse.SUPPRESS
        if base is bool:
            parser.add_argument(*names, dest=field.name, action=argparse.BooleanOptionalAction,
                                default=False if default is MISSING else default,
                                help=text if typed_only else f"{text} (default: %(default)s)".strip())
            if negative_aliases.get(field.name, names[0].replace('--', '--no-', 1)) != names[0].replace('--', '--no-', 1):
                parser.add_argument(negative_aliases[field.name], dest=field.name, action="store_false",
                                    default=argparse.SUPPRESS if typed_only else True,
                                    help=f"same as --no-{field.name.replace('_', '-')}")
            continue
        kind = {int: int, float: float}.get(base, str)
        options = choices.get(field.name, field.metadata.get("choices"))
        if typed_only:
            parser.add_argument(*names, dest=field.name, type=kind, choices=options, default=default, help=text)
            continue
        parser.add_argument(
            *names, dest=field.name, type=kind, choices=options,
            required=default is MISSING, default=None if default is MISSING else default,
            help=(f"{text} (default: %(default)s)" if default is not MISSING else f"{text} (required)").strip()
            + (" (unset: none)" if optional and default is None else ""),
        )


def read_config_file(path: str | Path) -> dict:
    """A ``--config`` JSON object (e.g. a run's ``train_config.json``)."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"--config {path}: no such file") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--config {path}: line {err.lineno} column {err.colno}: {err.msg}") from None
    if not isinstance(payload, dict):
        raise ValueError(f"--config {path}: expected a JSON object of config fields")
    return payload


def config_file_defaults(argv: Sequence[str] | None, cls: type) -> dict:
    """The fields of ``cls`` found in ``--config FILE`` of ``argv`` (empty without one)."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config", default=None)
    known, _ = pre.parse_known_args(argv)
    if not known.config:
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    return {key: value for key, value in read_config_file(known.config).items() if key in names}


def values_for(cls: type, args: argparse.Namespace) -> dict:
    """The parsed values of ``cls``'s fields."""
    return {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
