"""LoRA and DoRA through peft: low-rank adapters on chosen linear layers, the base frozen."""

from __future__ import annotations

from typing import Literal

import torch
from peft import LoraConfig, TaskType, get_peft_model
from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel

from ayar.errors import UsageError
from ayar.methods import register
from ayar.methods.base import Method
from ayar.methods.structure import task_head_names
from ayar.tasks import get_task


def peft_task_type(task: str) -> TaskType:
    """peft's task type for a task, as the task registry names it."""
    return TaskType[get_task(task).peft_task_type]


class LoraParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    r: int = Field(8, ge=1, description="Rank of the update matrices.")
    alpha: float = Field(16, gt=0, description="Scaling: the update is multiplied by alpha / r.")
    # 0.0 as in peft, torchtune and LLaMA-Factory: dropout on the adapter input keeps one more copy of every
    # adapted layer's input for backward (memory) and costs a mask per layer per step (4% of a small Llama's
    # LoRA step in the 2026-11-23 profile, docs/performance.md)
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] | Literal["all-linear", "auto"] = Field(
        "auto", description="Module names to adapt; 'auto' uses peft's choice for the architecture."
    )
    bias: Literal["none", "all", "lora_only"] = "none"
    modules_to_save: list[str] | None = Field(
        None, description="Extra modules trained fully; empty: the new task head for classification."
    )


def target_modules_for(model: PreTrainedModel, choice: list[str] | str) -> list[str] | str:
    """peft's default target modules for the architecture, else every linear layer."""
    if choice != "auto":
        return choice
    model_type = getattr(model.config, "model_type", "")
    return TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(model_type, "all-linear")


def modules_to_save_for(model: PreTrainedModel, task: str, choice: list[str] | None) -> list[str] | None:
    """The recipe's list, else the new head of a classifier (peft alone knows only 'classifier' and 'score')."""
    if choice is not None or not get_task(task).label_map:
        return choice
    return task_head_names(model) or None


def wrap_peft(model: PreTrainedModel, config: object, method: str) -> torch.nn.Module:
    """``get_peft_model`` with peft's refusals (architecture, task) turned into one clear UsageError."""
    try:
        return get_peft_model(model, config)  # type: ignore[arg-type]
    except (ValueError, TypeError, NotImplementedError, KeyError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UsageError(f"method '{method}' cannot wrap {type(model).__name__} "
                         f"({getattr(model.config, 'model_type', '?')}): {first}") from None


def lora_config(model: PreTrainedModel, task: str, params: LoraParams, use_dora: bool) -> LoraConfig:
    """The peft LoraConfig for a recipe's parameters."""
    return LoraConfig(
        r=params.r,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=target_modules_for(model, params.target_modules),
        bias=params.bias,
        modules_to_save=modules_to_save_for(model, task, params.modules_to_save),
        task_type=peft_task_type(task),
        use_dora=use_dora,
    )


@register
class Lora(Method):
    name = "lora"
    summary = "Low-rank adapters on a frozen base: the default; little memory, small files, fast."
    params_model = LoraParams
    is_adapter = True
    frozen_weights_matmul_only = True
    use_dora = False

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        return wrap_peft(model, lora_config(model, task, self.params, self.use_dora), self.name)


@register
class Dora(Lora):
    name = "dora"
    summary = "LoRA with a learned magnitude per weight column (DoRA): closer to full fine-tuning at low rank."
    use_dora = True
    frozen_weights_matmul_only = False
