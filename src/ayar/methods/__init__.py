"""Fine-tuning methods, one module each, registered by name.

Every module in this package is imported here, so a new method is one new file. A renamed method lists
its earlier names in ``former_names``: recipes that use one still load it, with a note naming the new one.
"""

from __future__ import annotations

import importlib
import pkgutil

from ayar.console import warn
from ayar.errors import UsageError
from ayar.methods.base import Method
from ayar.recipe import MethodConfig

_REGISTRY: dict[str, type[Method]] = {}
_FORMER_NAMES: dict[str, str] = {}  # an earlier name -> the name the method has now
_noted_former_names: set[str] = set()  # the rename is said once per process, not at every lookup
_discovered = False


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available to recipes by its ``name`` (and any ``former_names``)."""
    former = cls.former_names
    for name in (cls.name, *former):
        if _REGISTRY.get(current_name(name), cls) is not cls:
            raise ValueError(f"method name '{name}' is registered twice")
    _REGISTRY[cls.name] = cls
    _FORMER_NAMES.update(dict.fromkeys(former, cls.name))
    return cls


def current_name(name: str) -> str:
    """The name a method is registered under now: ``name`` itself unless it is a former name."""
    return _FORMER_NAMES.get(name, name)


def _discover() -> None:
    global _discovered
    for module in pkgutil.iter_modules(__path__):
        if module.name != "base":
            importlib.import_module(f"{__name__}.{module.name}")
    _discovered = True


def available_methods() -> dict[str, type[Method]]:
    """Every registered method by name (every module of the package is imported once)."""
    if not _discovered:  # importing one method module directly must not hide the others
        _discover()
    return dict(sorted(_REGISTRY.items()))


def get_method(name: str) -> type[Method]:
    """The method class registered under ``name`` or a former name of it; a clear error otherwise."""
    methods = available_methods()
    if name in _FORMER_NAMES:
        name = _renamed(name)
    if name not in methods:
        import difflib

        close = difflib.get_close_matches(name, methods, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"unknown method '{name}'{hint}; available: {', '.join(methods)}")
    return methods[name]


def _renamed(former: str) -> str:
    new = _FORMER_NAMES[former]
    if former not in _noted_former_names:
        _noted_former_names.add(former)
        warn(f"method '{former}' is now called '{new}'; the old name still works (write method.name: {new})")
    return new


def check_method(cfg: MethodConfig) -> type[Method]:
    """The method a recipe's ``method`` section names, with its own parameters checked.

    A mistake raises the UsageError the recipe's own keys raise (``unknown recipe key 'method.rank'``).
    Whoever loads a recipe to run it calls this (the CLI, the web app), so a typo fails before any stage.
    """
    method = get_method(cfg.name)
    method.check_params(cfg.params())
    return method


def build_method(name: str, params: dict | None = None) -> Method:
    """An instance of the named method with its validated parameters."""
    return get_method(name)(params)
