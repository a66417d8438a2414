"""The search space: the values a trial samples, and the recipe they make."""

from __future__ import annotations

import json
from typing import Any

import optuna

from ayar.errors import UsageError
from ayar.methods import check_method
from ayar.recipe import Recipe, SearchRange, apply_overrides, validate_recipe


def sample(trial: optuna.Trial, space: dict[str, SearchRange | list[Any]]) -> dict[str, Any]:
    """One value per space key, from Optuna's sampler (the key is the parameter's name in the study)."""
    values: dict[str, Any] = {}
    for key, spec in space.items():
        if isinstance(spec, list):
            values[key] = trial.suggest_categorical(key, spec)
        elif spec.is_int:
            values[key] = trial.suggest_int(key, int(spec.low), int(spec.high), step=int(spec.step or 1),
                                            log=spec.log)
        else:
            values[key] = trial.suggest_float(key, float(spec.low), float(spec.high), step=spec.step, log=spec.log)
    return values


def grid_of(space: dict[str, SearchRange | list[Any]]) -> dict[str, list[Any]]:
    """The grid sampler's lists: choices as given, a linear integer range as every value in it."""
    return {key: spec if isinstance(spec, list) else list(range(int(spec.low), int(spec.high) + 1,
                                                               int(spec.step or 1)))
            for key, spec in space.items()}


def recipe_with(base: Recipe, values: dict[str, Any]) -> Recipe:
    """``base`` with each ``dotted.key`` set to its value, validated as a recipe (its method's keys too).

    A value the recipe refuses raises the recipe's own UsageError.
    """
    data = apply_overrides(base.model_dump(mode="json"), [f"{key}={json.dumps(value)}"
                                                          for key, value in values.items()])
    recipe = validate_recipe(data)
    check_method(recipe.method)
    return recipe


def first_values(space: dict[str, SearchRange | list[Any]]) -> dict[str, Any]:
    """Each key's first candidate: a range's low end, a list's first choice."""
    return {key: spec[0] if isinstance(spec, list) else spec.low for key, spec in space.items()}


def check_space(base: Recipe) -> None:
    """Every space key is a recipe key that takes its first candidate; a UsageError naming it otherwise.

    Checked before the study starts, so a typo costs no trial; other values a trial samples may still be
    refused, and that trial is recorded failed.
    """
    for key, value in first_values(base.sweep.space).items():
        try:
            recipe_with(base, {key: value})
        except UsageError as exc:
            raise UsageError(f"sweep.space '{key}' (first value {value!r}): {exc}") from None
