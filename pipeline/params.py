"""Luigi parameters derived from a stage's config dataclass, so the two can never disagree.

Each field becomes a parameter of the same name and default (Optional types become Luigi's
Optional* parameters, booleans take explicit true/false on the command line, except a field with
``metadata["flag"]`` and default False: a switch such as ``--no-fold``); a field's
``metadata["help"]`` is its description.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import luigi

from prep.cli_args import MISSING, _base_type


ENCODER_HELP = "pretrained encoder folder or Hugging Face Hub id, org/name[@revision] (default: the packaged MiniLM)"


class EncoderDirParameter(luigi.OptionalParameter):
    """A pretrained encoder: a local folder or a Hugging Face Hub id (``org/name[@revision]``), None
    meaning the packaged MiniLM.

    The packaged model's own folder, named explicitly, normalises to None: it is the same encoder, so
    it finds the default's cached artifacts instead of giving them another name and training again.
    A Hub id normalises to ``org/name@<commit>`` (prep.models.pin_model, fetching it into the Hugging
    Face cache), once per process: every artifact name then records the commit, so a moved branch
    re-runs what depends on it and a pinned revision never does. A local folder keeps its value, and
    so its artifacts their names.
    """

    def normalize(self, x):
        x = super().normalize(x)
        if x is None:
            return None
        from prep.tokenizer import default_model_dir

        try:
            packaged = default_model_dir().resolve()
        except RuntimeError:  # the package is missing: nothing to compare with
            return pinned_model(x)
        return None if Path(x).resolve() == packaged else pinned_model(x)


_PINNED: dict[str, str] = {}  # what this process resolved: one answer per id, however many tasks name it


def pinned_model(value: str) -> str:
    """``value`` with a Hub id pinned to its commit (memoised per process). An id that cannot be had is
    left as typed: the task that reads the model folder fails then, saying why in one line."""
    from prep.models import ModelNotFoundError, pin_model

    if value not in _PINNED:
        try:
            _PINNED[value] = pin_model(value)
        except ModelNotFoundError:
            return value
    return _PINNED[value]


def luigi_parameter(field: dataclasses.Field, hint, *, default=MISSING, significant: bool = True,
                    choices=None) -> luigi.Parameter:
    base, optional = _base_type(hint)
    if default is MISSING:
        default = field.default if field.default is not MISSING else luigi.parameter._no_value
    kwargs = {"description": field.metadata.get("help", ""), "significant": significant}
    if default is not luigi.parameter._no_value:
        kwargs["default"] = default
    choices = choices or field.metadata.get("choices")
    if field.name == "model_dir":
        return EncoderDirParameter(**kwargs)
    if base is bool:
        if field.metadata.get("flag") and not optional and default is False:
            return luigi.BoolParameter(**kwargs)  # a plain switch: --no-fold
        if optional:
            return luigi.OptionalBoolParameter(**kwargs)
        return luigi.BoolParameter(parsing=luigi.BoolParameter.EXPLICIT_PARSING, **kwargs)
    if base is int:
        return (luigi.OptionalIntParameter if optional else luigi.IntParameter)(**kwargs)
    if base is float:
        return (luigi.OptionalFloatParameter if optional else luigi.FloatParameter)(**kwargs)
    if choices:
        return (luigi.OptionalChoiceParameter if optional else luigi.ChoiceParameter)(choices=tuple(choices), **kwargs)
    return (luigi.OptionalParameter if optional else luigi.Parameter)(**kwargs)


def dataclass_parameters(cls: type, *, skip=(), insignificant=(), defaults=None, choices=None,
                         optional: bool = False) -> dict:
    """``{field name: luigi parameter}`` for the fields of ``cls`` (less ``skip``); ``optional``: every
    parameter optional with default None (a value the task resolves itself)."""
    hints = typing.get_type_hints(cls)
    defaults, choices = dict(defaults or {}), dict(choices or {})
    if optional:
        hints = {name: typing.Optional[hint] for name, hint in hints.items()}
        defaults = {field.name: None for field in dataclasses.fields(cls)}
    return {
        field.name: luigi_parameter(field, hints[field.name], default=defaults.get(field.name, MISSING),
                                    significant=field.name not in insignificant, choices=choices.get(field.name))
        for field in dataclasses.fields(cls) if field.name not in skip and field.init
    }
