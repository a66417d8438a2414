"""Methods that change the loss but let another method prepare the model (distill, reweight, alum).

Such a method names its ``base`` (full, layers, lora, ...) and hands it every model-preparation
hook; subclasses override only what they add. This module registers no method itself.
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from transformers import PreTrainedModel, TrainerCallback

from ayar.methods import build_method, get_method
from ayar.methods.base import Method

WRAPPERS = ("distill", "reweight", "alum", "gate")  # methods that delegate model preparation to a base


def check_base_method(base: str, base_params: dict[str, Any]) -> None:
    """A ValueError (a recipe error) unless ``base`` names a preparing method whose params are valid."""
    if base in WRAPPERS:
        raise ValueError(f"base must be a method that prepares the model (full, layers, lora...), not {base}")
    try:
        get_method(base).params_model.model_validate(base_params)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ValueError(f"base_params.{'.'.join(map(str, err['loc']))}: {err['msg']}") from None


class WrappedParams(BaseModel):
    """The ``base`` method and its parameters, shared by every wrapping method's params."""

    model_config = ConfigDict(extra="forbid")

    base: str = Field("full", description="Method that prepares the model: full, layers, lora, dora...")
    base_params: dict[str, Any] = Field(default_factory=dict, description="That method's own parameters.")

    @model_validator(mode="after")
    def _base_prepares_the_model(self) -> WrappedParams:
        check_base_method(self.base, self.base_params)
        return self


class WrappingMethod(Method):
    """Delegates preflight, loading, preparation, setup, optimizer groups and callbacks to ``base``."""

    params_model = WrappedParams

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.inner = build_method(self.params.base, self.params.base_params)
        self.is_adapter = self.inner.is_adapter
        self.task = "causal_lm"

    def preflight(self, task: str) -> None:
        super().preflight(task)
        self.inner.preflight(task)

    def model_load_kwargs(self, task: str) -> dict[str, Any]:
        return self.inner.model_load_kwargs(task)

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        self.task = task
        return self.inner.prepare_model(model, task)

    def setup(self, model: torch.nn.Module, tokenizer: Any, train_dataset: Any, run_dir: Any) -> None:
        self.inner.setup(model, tokenizer, train_dataset, run_dir)

    def param_groups(self, model: torch.nn.Module, base_lr: float, weight_decay: float) -> list[dict] | None:
        return self.inner.param_groups(model, base_lr, weight_decay)

    def callbacks(self) -> list[TrainerCallback]:
        return self.inner.callbacks()
