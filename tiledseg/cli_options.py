"""The ``tiledseg`` command's options, generated from the option models.

Each field of a model in :mod:`tiledseg.options` becomes ``--field-name``: its help
is the field's description, its choices the field's literal values, its default the
field's default (or its ``cli_default``, for ``quiet``). The command passes on only
what the user gave; the model applies its defaults and checks every value, so the
command line, the config file and the API accept and refuse the same values with the
same messages.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable, Iterable
from typing import Any

import click
from pydantic.fields import FieldInfo

from tiledseg.options import Options, build

__all__ = ["model_options", "models_of", "take"]

#: The attribute that lists, on a command's function, the fields its options came from.
_FIELDS = "__tiledseg_fields__"


def model_options(
    *models: type[Options], only: Iterable[str] | None = None, exclude: Iterable[str] = ()
) -> Callable[[Callable], Callable]:
    """Return a decorator adding one click option per field of ``models``.

    ``only`` / ``exclude`` pick fields by name (for a command that uses some of a
    concern's fields, as ``cluster`` uses the bank but not the classifier).
    """
    keep = None if only is None else set(only)
    chosen = [
        (name, field)
        for model in models
        for name, field in model.model_fields.items()
        if (keep is None or name in keep) and name not in set(exclude)
    ]

    def decorate(f: Callable) -> Callable:
        # click lists options in the order their decorators are applied, last first
        for name, field in reversed(chosen):
            f = _option(name, field)(f)
        setattr(f, _FIELDS, {**getattr(f, _FIELDS, {}), **dict(chosen)})
        return f

    return decorate


def models_of(command: click.Command) -> dict[str, FieldInfo]:
    """Return the fields a command's generated options stand for (name -> field)."""
    return dict(getattr(command.callback, _FIELDS, {}))


def take(kwargs: dict[str, Any], model: type[Options], **fixed: Any) -> Options:
    """Pop ``model``'s fields from a command's ``kwargs`` and return the model they make.

    Options the user did not give are left out, so the model's defaults apply;
    ``fixed`` sets fields the command decides itself.
    """
    given = {}
    for name in model.model_fields:
        if name not in kwargs:
            continue
        value = kwargs.pop(name)
        if value is not None and value != ():
            given[name] = value
    return build(model, {**given, **fixed}, "cli")


def _option(name: str, field: FieldInfo) -> Callable[[Callable], Callable]:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    flag = extra.get("flag") or "--" + name.replace("_", "-")
    settings: dict[str, Any] = {"help": field.description, "default": None}
    annotation = field.annotation
    if _is_bool(annotation):
        default = extra.get("cli_default", field.default)
        declared = extra.get("cli") or (flag if default is False else f"{flag}/--no-{flag[2:]}")
        if "/" in declared:
            # a --x/--no-x pair: its default is shown as the switch that is on
            settings.update(default=default, show_default=default is not None)
        else:
            settings.update(default=default, is_flag=True)
        return click.option(declared, name, **settings)
    choices = _choices(annotation, extra)
    if choices is not None:
        settings["type"] = click.Choice(choices)
    elif not _parses_text(field):
        # a plain number: click refuses text that is not one; a field with its own parser
        # (stages, smooth_iterations) gets the text, and its own message
        settings["type"] = _number_type(annotation)
    if extra.get("metavar"):
        settings["metavar"] = extra["metavar"]
    if _is_tuple(annotation):
        settings.update(multiple=True, default=())
    elif field.default is not None and not field.is_required():
        # (click's show_default given a text shows it in parentheses: written out instead)
        settings["help"] = f"{field.description}  [default: {field.default}]"
    settings["required"] = field.is_required()
    return click.option(flag, name, **settings)


def _parses_text(field: FieldInfo) -> bool:
    return any(type(m).__name__ == "BeforeValidator" for m in field.metadata)


def _number_type(annotation: Any) -> Any:
    members = set(_members(annotation)) - {type(None)}
    if members == {int}:
        return click.INT
    if members == {float}:
        return click.FLOAT
    return click.STRING


def _members(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return tuple(_bare(m) for m in typing.get_args(annotation))
    return (_bare(annotation),)


def _bare(annotation: Any) -> Any:
    """``int`` of ``Annotated[int, Gt(0)]`` (PositiveInt)."""
    return (
        typing.get_args(annotation)[0]
        if typing.get_origin(annotation) is typing.Annotated
        else annotation
    )


def _is_bool(annotation: Any) -> bool:
    members = _members(annotation)
    return bool in members and all(m in (bool, type(None)) for m in members)


def _is_tuple(annotation: Any) -> bool:
    return typing.get_origin(annotation) is tuple


def _choices(annotation: Any, extra: dict[str, Any]) -> list[str] | None:
    if extra.get("choices") == "classifiers":
        from tiledseg.classifiers import CLASSIFIERS

        return list(CLASSIFIERS)
    for member in _members(annotation):
        if typing.get_origin(member) is typing.Literal:
            return [str(v) for v in typing.get_args(member)]
    return None
