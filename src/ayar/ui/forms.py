"""The new-run form, generated from the recipe's pydantic JSON schema, and the recipe it writes.

Every leaf of ``Recipe.model_json_schema()`` becomes one field with its default and description; the
method section shows each method's own parameters (from its ``params_model``). The form sends only the
fields the user changed; they are applied to the example recipe and checked by ``validate_recipe``, so
a mistake reads exactly as the CLI says it.
"""

from __future__ import annotations

import shlex
from collections.abc import Container
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ayar.errors import UsageError


@dataclass
class FormField:
    """One input of the form."""

    key: str  # dotted recipe key, e.g. train.learning_rate
    kind: str  # bool | enum | number | string | yaml
    description: str = ""
    default: Any = None
    options: list[str] = field(default_factory=list)
    nullable: bool = False
    method: str | None = None  # shown only while method.name is this method
    value: str = ""


# What a person sets first, shown above the rest of the form (a method parameter shows with its method).
MAIN_KEYS = frozenset({"task", "run.name", "pretrain.enabled", "model.name_or_path", "data.inputs",
                       "data.synthetic.num_records", "data.synthetic.tasks", "data.format", "method.name",
                       "method.r", "train.max_steps", "train.batch_size", "train.learning_rate",
                       "train.precision"})


def section_switches(key: str, switch_keys: Container[str]) -> list[str]:
    """The ``<section>.enabled`` switches of the sections holding ``key`` (pretrain.enabled for
    pretrain.max_steps); a switch is not its own."""
    parts = key.split(".")
    candidates = (".".join(parts[:depth]) + ".enabled" for depth in range(1, len(parts)))
    return [switch for switch in candidates if switch in switch_keys and switch != key]


def is_unused(f: FormField, values: dict[str, str]) -> bool:
    """A field the current choices leave unused: another method's parameter, or one in a section whose
    ``enabled`` switch is off. ``values`` maps the method-independent keys to their form text."""
    if f.method is not None and f.method != values.get("method.name"):
        return True
    return any(values.get(switch) == "false" for switch in section_switches(f.key, values))


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    return defs[ref.rsplit("/", 1)[-1]] if ref else node


def _choices(option: dict[str, Any]) -> list[Any] | None:
    if option.get("type") == "boolean":
        return [True, False]
    if "enum" in option:
        return list(option["enum"])
    if "const" in option:
        return [option["const"]]
    return None


def _leaf(key: str, node: dict[str, Any], defs: dict[str, Any], method: str | None) -> FormField:
    options = [_resolve(o, defs) for o in node.get("anyOf", [node])]
    nullable = any(o.get("type") == "null" for o in options)
    options = [o for o in options if o.get("type") != "null"]
    choices = [_choices(o) for o in options]
    base = FormField(key, "yaml", node.get("description", ""), node.get("default"), nullable=nullable,
                     method=method)
    if options and all(c is not None for c in choices):
        values = [v for c in choices for v in c]  # type: ignore[union-attr]
        base.kind, base.options = "enum", [text_of(v) for v in values]
        if nullable:
            base.options.insert(0, "")
    elif len(options) == 1 and options[0].get("type") in ("integer", "number"):
        base.kind = "number"
    elif len(options) == 1 and options[0].get("type") == "string":
        base.kind = "string"
    if len(options) == 1 and options[0].get("type") == "boolean":
        base.kind = "bool"
    return base


def _walk(schema: dict[str, Any], defs: dict[str, Any], prefix: str, out: list[FormField]) -> None:
    for name, raw in schema.get("properties", {}).items():
        key = f"{prefix}{name}"
        if key == "method":
            out.extend(method_fields())
            continue
        node = _resolve(raw, defs)
        sections = [_resolve(o, defs) for o in raw.get("anyOf", [])]
        objects = [o for o in sections if o.get("properties")]
        if node.get("properties"):
            _walk(node, defs, key + ".", out)
        elif len(objects) == 1 and len(sections) == 2:  # an optional section (e.g. data.synthetic)
            _walk(objects[0], defs, key + ".", out)
        else:
            out.append(_leaf(key, raw, defs, None))


def method_fields() -> list[FormField]:
    """method.name as a choice, then every method's own parameters (each shown with its method)."""
    from ayar.methods import available_methods

    methods = available_methods()
    out = [FormField("method.name", "enum", "Fine-tuning method; see `ayar train --help`.", "lora",
                     options=list(methods))]
    for name, cls in methods.items():
        schema = cls.params_model.model_json_schema()
        for param, node in schema.get("properties", {}).items():
            out.append(_leaf(f"method.{param}", node, schema.get("$defs", {}), name))
    return out


def recipe_fields() -> list[FormField]:
    """Every field of the recipe schema, in schema order."""
    from ayar.recipe import Recipe

    schema = Recipe.model_json_schema()
    out: list[FormField] = []
    _walk(schema, schema.get("$defs", {}), "", out)
    return out


def text_of(value: Any) -> str:
    """A value as the form shows it (YAML flow style, as one would type it after --set key=)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def _get(data: dict[str, Any], key: str) -> Any:
    node: Any = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def filled_fields(example: dict[str, Any]) -> list[FormField]:
    """The form's fields holding the example recipe's resolved values (defaults where it sets none)."""
    from ayar.recipe import validate_recipe

    try:
        resolved = validate_recipe(dict(example)).model_dump(mode="json")
    except UsageError:
        resolved = example
    chosen = _get(resolved, "method.name") or "lora"
    fields = recipe_fields()
    for f in fields:
        if f.method is not None and f.method != chosen:
            f.value = text_of(f.default)
            continue
        value = _get(resolved, f.key)
        f.value = text_of(f.default if value is None and f.key.startswith("data.synthetic.") else value)
    return fields


def parse_value(f: FormField, text: str) -> Any:
    """A field's text as the recipe value: strings as typed, everything else read as YAML (like --set)."""
    if text.strip() == "" and (f.nullable or f.kind != "string"):
        return None
    if f.kind == "string":
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        raise UsageError(f"recipe key '{f.key}': '{text}' is not a valid value") from None


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def apply_changes(example: dict[str, Any], changes: dict[str, str]) -> dict[str, Any]:
    """The example recipe with the changed fields applied (unknown keys are left to the validator)."""
    import copy

    known = {f.key: f for f in recipe_fields() if f.method is None}
    data = copy.deepcopy(example)
    method = changes.get("method.name")
    if method is not None and method != _get(data, "method.name"):
        data["method"] = {"name": method}  # the old method's parameters do not apply to the new one
    for key, text in changes.items():
        f = known.get(key) or FormField(key, "yaml", nullable=True)
        if key == "method.name":
            continue
        _set(data, key, parse_value(f, text))
    return data


def recipe_yaml(data: dict[str, Any]) -> str:
    """The recipe as the YAML file the form writes."""
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def cli_command(example: Path | None, changes: dict[str, str]) -> str:
    """The same run from the command line: the example recipe plus one --set per changed field."""
    parts = ["ayar", "run", str(example) if example else "recipe.yaml"]
    for key, text in changes.items():
        parts += ["--set", f"{key}={text}"]
    return " ".join(shlex.quote(p) for p in parts)


def example_recipes(root: Path | None = None) -> dict[str, Path]:
    """The example recipes (recipes/*.yaml) from the working folder, else from the source checkout."""
    candidates = [root] if root else [Path.cwd() / "recipes", Path(__file__).resolve().parents[3] / "recipes"]
    for folder in candidates:
        if folder and folder.is_dir():
            found = {p.stem: p for p in sorted(folder.glob("*.yaml"))}
            if found:
                return found
    return {}


def load_example(path: Path | None) -> dict[str, Any]:
    """An example recipe's raw mapping (an empty recipe when there is none)."""
    if path is None:
        return {}
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return data if isinstance(data, dict) else {}
