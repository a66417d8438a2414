"""Methods that change the loss but let another method prepare the model (distill, reweight, alum).

Such a method names its ``base`` (full, layers, lora, ...) and hands it every hook but the loss
(``compute_loss``, ``extra_loss``, which are the wrapper's own); subclasses override only what they
add and combine with ``super()``. This module registers no method itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from transformers import PreTrainedModel, TrainerCallback

from ayar.methods import available_methods, build_method, get_method
from ayar.methods.base import Method, TrainerSpec


def wrapping_methods() -> tuple[str, ...]:
    """The registered methods that delegate model preparation to a base (derived, not hand-kept)."""
    return tuple(name for name, cls in available_methods().items() if issubclass(cls, WrappingMethod))


def check_base_method(base: str, base_params: dict[str, Any]) -> None:
    """A ValueError (a recipe error) unless ``base`` names a preparing method whose params are valid."""
    cls = get_method(base)
    if issubclass(cls, WrappingMethod):
        raise ValueError(f"base must be a method that prepares the model (full, layers, lora...), not {base}")
    try:
        cls.params_model.model_validate(base_params)
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
    """Delegates every hook but the loss to ``base``: preflight, loading, preparation, setup, validation,
    extra columns, callbacks, optimizer groups, the trainer class and the frozen-weight storage rule."""

    params_model = WrappedParams

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.inner = build_method(self.params.base, self.params.base_params)
        self.is_adapter = self.inner.is_adapter
        # Under bf16 a LoRA base stores its frozen weights in bf16 (ayar.train.precision), wrapped or not.
        self.frozen_weights_matmul_only = self.inner.frozen_weights_matmul_only
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

    def use_validation(self, eval_dataset: Any) -> None:
        self.inner.use_validation(eval_dataset)

    def encode_extra(self, record: dict[str, Any], encoded: dict[str, Any], tokenizer: Any, task: str) -> dict:
        return self.inner.encode_extra(record, encoded, tokenizer, task)

    def model_inputs_extra(self) -> tuple[str, ...]:
        return self.inner.model_inputs_extra()

    def param_groups(self, model: torch.nn.Module, base_lr: float, weight_decay: float) -> list[dict] | None:
        return self.inner.param_groups(model, base_lr, weight_decay)

    def callbacks(self) -> list[TrainerCallback]:
        return self.inner.callbacks()

    def save_model(self, model: torch.nn.Module, folder: Path) -> None:
        self.inner.save_model(model, folder)

    def trainer_spec(self) -> TrainerSpec:
        return self.inner.trainer_spec()
