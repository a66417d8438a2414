"""The method plug-in interface: what to freeze or wrap, an optional extra loss, optional callbacks."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict
from transformers import PreTrainedModel, TrainerCallback


class NoParams(BaseModel):
    """A method without parameters of its own."""

    model_config = ConfigDict(extra="forbid")


class Method:
    """A fine-tuning method. Subclass, set ``name`` and ``params_model``, and decorate with ``@register``."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # one line on when to use it, shown in `ayar train --help`
    params_model: ClassVar[type[BaseModel]] = NoParams
    tasks: ClassVar[tuple[str, ...]] = ("causal_lm", "classification", "seq2seq")
    is_adapter: ClassVar[bool] = False  # saves an adapter rather than full weights

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = self.params_model.model_validate(params or {})

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        """Freeze, wrap or modify the model before training; return the model to train."""
        return model

    def extra_loss(self, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        """An optional term added to the task loss."""
        return None

    def callbacks(self) -> list[TrainerCallback]:
        """Optional Trainer callbacks (schedules such as gradual unfreezing)."""
        return []


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
