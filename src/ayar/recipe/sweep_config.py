"""Recipe section of ``ayar sweep``: the search space, the objective and the Optuna study's settings.

Every key here is read by the sweep only; ``ayar run`` and the other stages ignore the section.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ayar.recipe.section import Section

Direction = Literal["minimize", "maximize"]

# What an objective may read: the validation pass of training, the eval stage (which a trial runs on the
# validation split) and the forgetting probes (general material, no split). The test split is never one.
OBJECTIVE_PATH = re.compile(r"validation\.loss|eval\.\w+(\.\w+)*|forgetting(\.\w+)+")
# Keys that place a trial's run folder: the sweep sets them itself.
RESERVED_KEYS = ("run.name", "run.output_dir")


class SearchRange(Section):
    """A range to sample from: integers when ``low`` and ``high`` are both integers, else floats."""

    low: int | float = Field(description="Smallest value.")
    high: int | float = Field(description="Largest value.")
    log: bool = Field(False, description="Sample on a log scale (low must be above 0).")
    step: int | float | None = Field(None, gt=0, description="Spacing of the values (not with log).")

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and not isinstance(self.step, float)

    @model_validator(mode="after")
    def _ordered(self) -> SearchRange:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low above 0")
        if self.log and self.step is not None:
            raise ValueError("give log or step, not both")
        return self


class SweepConfig(Section):
    """``ayar sweep``: trials of the recipe with values from ``space``, searched by Optuna on validation figures."""

    space: dict[str, SearchRange | list[Any]] = Field(
        default_factory=dict, description="Recipe key -> a range {low, high, log, step} or a list of choices, "
        "e.g. train.learning_rate: {low: 1.0e-4, high: 3.0e-3, log: true}, method.r: [8, 16, 32].")
    objective: list[str] = Field(
        ["validation.loss"], min_length=1, description="Figures to optimise (one, or several for a Pareto front): "
        "validation.loss (training's validation pass), eval.<model>.<metric> (the eval stage, which a trial runs "
        "on the validation split, e.g. eval.tuned.exact_match) or forgetting.<path> (e.g. "
        "forgetting.answers.greedy.lost_share). Never the test split.")
    direction: list[Direction] | None = Field(
        None, description="minimize or maximize, one per objective (default: minimize for validation.loss; "
        "any other objective names its direction).")
    sampler: Literal["tpe", "random", "grid"] = Field(
        "tpe", description="tpe: Optuna's TPE after a few random trials; random; grid: every combination of "
        "the space's lists (integer ranges count as lists).")
    startup_trials: int | None = Field(None, ge=1, description="tpe: random trials before TPE takes over "
                                       "(default: a third of n_trials, 2 to 10).")
    pruner: Literal["none", "median", "hyperband"] = Field(
        "none", description="Stop unpromising trials early on their intermediate validation losses (single "
        "objective only).")
    n_trials: int = Field(10, ge=1, description="Trials in the study, all workers together (running, complete, "
                          "pruned and failed ones count).")
    timeout: float | None = Field(None, gt=0, description="Seconds after which a worker starts no new trial.")
    test_best: bool = Field(True, description="Evaluate the best trial on the test split once the search ends "
                            "(reported apart: no objective reads it).")

    @field_validator("space", mode="before")
    @classmethod
    def _ranges_and_choices(cls, space: Any) -> Any:
        if not isinstance(space, dict):
            return space
        return {key: _search_values(key, values) for key, values in space.items()}

    @field_validator("objective", mode="before")
    @classmethod
    def _one_or_many(cls, objective: Any) -> Any:
        return [objective] if isinstance(objective, str) else objective

    @field_validator("direction", mode="before")
    @classmethod
    def _direction_one_or_many(cls, direction: Any) -> Any:
        return [direction] if isinstance(direction, str) else direction

    @field_validator("objective")
    @classmethod
    def _validation_figures_only(cls, objective: list[str]) -> list[str]:
        for path in objective:
            if "test" in path.split(".") or not OBJECTIVE_PATH.fullmatch(path):
                raise ValueError(f"objective '{path}' is not a validation figure: use validation.loss, "
                                 "eval.<model>.<metric> (e.g. eval.tuned.exact_match) or forgetting.<path>")
        return objective

    @model_validator(mode="after")
    def _consistent(self) -> SweepConfig:
        directions = self.directions()
        if len(directions) != len(self.objective):
            raise ValueError(f"{len(self.objective)} objectives but {len(directions)} directions")
        if self.pruner != "none" and len(self.objective) > 1:
            raise ValueError("a pruner needs a single objective (Optuna prunes single-objective studies only)")
        reserved = [key for key in self.space if key in RESERVED_KEYS or key.split(".")[0] == "sweep"]
        if reserved:
            raise ValueError(f"space keys {reserved} are set by the sweep itself")
        if self.sampler == "grid":
            unlisted = [key for key, values in self.space.items()
                        if isinstance(values, SearchRange) and not (values.is_int and not values.log)]
            if unlisted or not self.space:
                raise ValueError(f"the grid sampler needs lists or linear integer ranges; give lists for {unlisted}")
        return self

    def directions(self) -> list[Direction]:
        """One direction per objective; the default where the objective is the validation loss."""
        if self.direction is not None:
            return list(self.direction)
        if self.objective == ["validation.loss"]:
            return ["minimize"]
        raise ValueError(f"name sweep.direction (minimize or maximize) for objective {self.objective}")


def _search_values(key: str, values: Any) -> SearchRange | list[Any]:
    """A range from a mapping, a list of scalar choices from a list; a ValueError naming the key otherwise."""
    if isinstance(values, SearchRange):
        return values
    if isinstance(values, dict):
        try:
            return SearchRange.model_validate(values)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            raise ValueError(f"'{key}'{f' {where}' if where else ''}: {err['msg'].removeprefix('Value error, ')}"
                             ) from None
    if isinstance(values, list) and values and all(v is None or isinstance(v, bool | int | float | str)
                                                   for v in values):
        return values
    raise ValueError(f"'{key}' needs a range {{low, high, log}} or a non-empty list of numbers, strings or booleans")
