"""Reading a recipe: YAML file, ``--set`` overrides, validation, and mistakes worded by recipe key."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ayar.errors import UsageError
from ayar.recipe.schema import Recipe


def _section_fields(path: tuple[str | int, ...]) -> list[str]:
    """Valid keys at a location of the schema, for 'did you mean' hints."""
    model: type[BaseModel] | None = Recipe
    for part in path[:-1]:
        if model is None or not isinstance(part, str) or part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        model = _first_model(annotation)
    return list(model.model_fields) if model else []


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _first_model(arg)
        if found:
            return found
    return None


def _describe(err: dict[str, Any], params_model: type[BaseModel] | None = None) -> str:
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
    key = ".".join(str(p) for p in loc) or "recipe"
    if err["type"] == "extra_forbidden":
        valid = ["name", *params_model.model_fields] if params_model else _section_fields(loc)
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1)
        hint = f" (did you mean '{'.'.join(str(p) for p in loc[:-1] + (close[0],))}'?)" if close else ""
        return f"unknown recipe key '{key}'{hint}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"recipe key '{key}': {msg}"


def params_error(exc: ValidationError, section: str, params_model: type[BaseModel]) -> UsageError:
    """The UsageError for parameters validated outside this schema (a method's own, under ``section``),
    worded as the recipe's own keys are: ``unknown recipe key 'method.rank' (did you mean ...)``."""
    err = exc.errors()[0]
    return UsageError(_describe({**err, "loc": (section, *err["loc"])}, params_model))


def validate_recipe(data: dict[str, Any]) -> Recipe:
    """Validate a recipe dict; a mistake raises UsageError naming the key."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise UsageError(_describe(exc.errors()[0])) from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``dotted.key=value``; the value is read as YAML (numbers, booleans, lists)."""
    if "=" not in text:
        raise UsageError(f"--set '{text}' must look like dotted.key=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise UsageError(f"--set '{text}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides onto a raw recipe dict (creating sections as needed)."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for key in keys[:-1]:
            child = node.get(key)
            if child is None:
                child = node[key] = {}
            if not isinstance(child, dict):
                raise UsageError(f"--set '{text}': '{key}' is not a section")
            node = child
        node[keys[-1]] = value
    return data


def load_recipe(path: str | Path | None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (or start from defaults when path is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise UsageError(f"recipe file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise UsageError(f"recipe {path} is not valid YAML{where}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise UsageError(f"recipe {path} must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    return validate_recipe(apply_overrides(data, overrides or []))


def dump_recipe(recipe: Recipe, path: Path) -> None:
    """Write the fully resolved recipe (defaults and overrides applied) as YAML."""
    data = recipe.model_dump(mode="json")
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
