"""Options defined once: a config dataclass's fields carry their help, and everything else follows.

A field made with :func:`option` holds its default, its one-line help and, where its type is not
enough to say, its choices (a ``Literal`` type gives them), a metavar, whether it may change on
``--resume``, and whether it is a command-line flag at all (options that the data decides are not).
From that, this module derives, for any such dataclass:

* the command-line flags (:func:`add_flags`): ``--dim`` for ``dim``, ``--length-scale`` for a
  boolean that is off by default, ``--no-progress`` for one that is on; only flags given on the
  command line reach the namespace, so defaults and presets stay below them (:func:`given`);
* the defaults (:func:`defaults`), to complete a saved config with the options it predates;
* the choices (:func:`check_choices`), to validate a config;
* the options that may change on resume (:func:`resumable`).

It imports nothing from the package.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["add_flags", "check_choices", "choices_of", "defaults", "flag_name", "given", "option", "pick", "resumable"]


def option(
    default: Any = dataclasses.MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: Iterable[Any] | None = None,
    metavar: str | None = None,
    flag: bool = True,
    resumable: bool = False,
) -> Any:
    """A dataclass field with its help: ``dim: int = option(128, "model width")``.

    ``factory`` replaces ``default`` for mutable values; ``choices`` for types that do not give
    them (a ``Literal`` does); ``flag=False`` for options set by the data or the run, not by a
    command-line flag; ``resumable=True`` for those that may differ when a run is resumed.
    """
    if not help:
        raise ValueError("option(): every option needs its help")
    metadata = {"help": help, "choices": None if choices is None else tuple(choices), "metavar": metavar}
    metadata.update(flag=flag, resumable=resumable)
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@functools.cache
def _types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` is allowed) of an annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return (args[0] if len(args) == 1 else annotation), len(args) < len(typing.get_args(annotation))
    return annotation, False


def choices_of(cls: type, field: dataclasses.Field) -> tuple[Any, ...] | None:
    """The allowed values of a field: its ``choices``, else its ``Literal`` type's values."""
    if field.metadata.get("choices") is not None:
        return field.metadata["choices"]
    base, _ = _base_type(_types(cls)[field.name])
    return typing.get_args(base) if typing.get_origin(base) is typing.Literal else None


def check_choices(config: Any) -> None:
    """ValueError naming the option when a field of ``config`` holds a value outside its choices."""
    cls = type(config)
    for f in dataclasses.fields(cls):
        allowed, value = choices_of(cls, f), getattr(config, f.name)
        if allowed is not None and value not in allowed:
            raise ValueError(f"{cls.__name__}.{f.name} must be one of {allowed}, got {value!r}")


def defaults(cls: type) -> dict[str, Any]:
    """Every field's default value (a fresh one for a ``factory``)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def resumable(cls: type) -> set[str]:
    """The fields that may change when a run is resumed (the budget and the machine)."""
    return {f.name for f in dataclasses.fields(cls) if f.metadata.get("resumable")}


def pick(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``values`` that are fields of ``cls``."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def _flags(cls: type) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag")]


def flag_name(field: dataclasses.Field, both_ways: bool = False) -> str:
    """``--length-scale`` for ``length_scale``; ``--no-progress`` for a boolean that is on by default
    (unless ``both_ways``: then the positive name, whose ``--no-`` form argparse adds)."""
    name = field.name.replace("_", "-")
    return f"--no-{name}" if field.default is True and not both_ways else f"--{name}"


def _parse_optional(kind: type) -> Callable[[str], Any]:
    """``kind(text)``, or None for ``none``: an optional number's flag can turn a preset's value off."""

    def parse(text: str) -> Any:
        return None if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names it: "invalid int value: 'x'"
    return parse


def add_flags(parser: argparse.ArgumentParser, cls: type, *, from_preset: Iterable[str] = ()) -> None:
    """One flag per option of ``cls`` (fields made with ``flag=False`` excepted), its help the field's.

    The flags' values reach the namespace only when given (:func:`given`); the help shows the
    field's default (unless None), or "the preset's" for the fields named in ``from_preset``.
    """
    preset_fields = set(from_preset)
    for f in _flags(cls):
        kind, optional = _base_type(_types(cls)[f.name])
        help_text, common = f.metadata["help"].replace("%", "%%"), {"dest": f.name, "default": argparse.SUPPRESS}
        if kind is bool:
            off = f.default is True
            both_ways = f.name in preset_fields  # a preset may set it either way: --X and --no-X
            if both_ways:
                action: Any = argparse.BooleanOptionalAction
                help_text = f"{help_text} (default: the preset's)"
            else:
                action = "store_false" if off else "store_true"
                help_text = f"turn off: {help_text}" if off else help_text
            parser.add_argument(flag_name(f, both_ways), action=action, help=help_text, **common)
            continue
        allowed = choices_of(cls, f)
        if typing.get_origin(kind) is typing.Literal:
            kind = type(allowed[0])
        if kind not in (int, float, str):
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line form for {kind!r}; give it flag=False")
        shown = "the preset's" if f.name in preset_fields else defaults(cls).get(f.name)
        parser.add_argument(
            flag_name(f),
            type=_parse_optional(kind) if optional and kind is not str else kind,
            choices=allowed,
            metavar=f.metadata.get("metavar") or (None if allowed else {int: "N", float: "X", str: "S"}[kind]),
            help=help_text if shown is None else f"{help_text} (default: {shown})",
            **common,
        )


def given(args: argparse.Namespace, cls: type) -> dict[str, Any]:
    """The options of ``cls`` given on the command line (flags added by :func:`add_flags`)."""
    return {f.name: getattr(args, f.name) for f in _flags(cls) if hasattr(args, f.name)}
