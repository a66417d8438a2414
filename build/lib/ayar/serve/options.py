"""The options of `ayar serve`, read from the recipe's ServeConfig schema (stated once, there).

Kept apart from the server (no torch, no web framework) so the CLI can build its options at import.
"""

from __future__ import annotations

import types
import typing

from ayar.recipe import ServeConfig


def option_name(field: str) -> str:
    """The command-line flag of a ServeConfig field: ``max_queue`` -> ``--max-queue``."""
    return "--" + field.replace("_", "-")


def option_type(field: str) -> type:
    """The plain type of a ServeConfig field for a command-line parser (``Path | None`` -> ``Path``,
    ``Literal[...]`` -> ``str``)."""
    annotation = ServeConfig.model_fields[field].annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is typing.Literal:  # the schema names the allowed values in its error
        return str
    return annotation


def option_help(field: str) -> str:
    """The field's description and its default, as help text."""
    info = ServeConfig.model_fields[field]
    default = "" if info.default is None else f" (default: {info.default})"
    return f"{info.description or field.replace('_', ' ')}{default}"
