"""v2 from v1: the next run's name, v1 merged into a plain base, and the v2 recipe."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

from ayar.iterate.choose import is_preference_method, preference_data_format
from ayar.recipe import Recipe, apply_overrides, validate_recipe


def next_run_name(name: str) -> str:
    """run -> run-v2, run-v2 -> run-v3."""
    match = re.fullmatch(r"(.*)-v(\d+)", name)
    return f"{match.group(1)}-v{int(match.group(2)) + 1}" if match else f"{name}-v2"


def _method_params(recipe: Recipe, method: str) -> dict[str, Any]:
    """Parameters for the v2 method: the recipe's own when unchanged, else its adapter settings carried over."""
    from ayar.methods.preference import BASES  # the v1 methods a preference method can train over

    v1, params = recipe.method.name, recipe.method.params()
    if method == v1:
        return params
    v1_preference = is_preference_method(v1)
    if is_preference_method(method):
        if v1_preference:
            return {"base": params.get("base", "lora"), "base_params": params.get("base_params", {})}
        if v1 in BASES:
            return {"base": v1, "base_params": params}
        return {"base": "lora"}
    return params.get("base_params", {}) if v1_preference else {}


def v2_recipe(recipe: Recipe, name: str, base: Path, method: str, overrides: list[str]) -> Recipe:
    """The v1 recipe with v2's name, base model, method and data format; ``--set`` overrides win."""
    data = recipe.model_dump(mode="json")
    data["run"]["name"] = name
    data["model"]["name_or_path"] = str(base)
    data["pretrain"]["enabled"] = False
    data["method"] = {"name": method, **_method_params(recipe, method)}
    data["data"]["format"] = preference_data_format(method) or "alpaca"  # SFT on corrections: instruction/output
    data["data"]["synthetic"], data["data"]["inputs"] = None, []
    return validate_recipe(apply_overrides(data, overrides))


def merged_base(v1_model: Path, out: Path) -> Path:
    """v1 as a plain model folder: a LoRA-like adapter merged into its base; a full model as it is."""
    from ayar.models.load import is_adapter_dir, load_for_inference, merge_adapter

    if not is_adapter_dir(v1_model):
        return v1_model
    if (out / "config.json").is_file():
        return out
    model, tokenizer = load_for_inference(v1_model)
    merged = merge_adapter(model)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    """One JSON record a line (the folder is made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
