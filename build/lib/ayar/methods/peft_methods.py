"""IA3 and the prompt-learning methods (prompt, prefix and p-tuning), all through peft."""

from __future__ import annotations

from typing import Literal

import torch
from peft import IA3Config, PrefixTuningConfig, PromptEncoderConfig, PromptTuningConfig
from peft.utils import (
    TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING,
    TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING,
)
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel

from ayar.errors import UsageError
from ayar.methods import register
from ayar.methods.base import Method
from ayar.methods.lora import modules_to_save_for, peft_task_type, wrap_peft


class IA3Params(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_modules: list[str] | Literal["auto"] = Field(
        "auto", description="Modules whose activations are rescaled; 'auto' uses peft's choice for the architecture."
    )
    feedforward_modules: list[str] | Literal["auto"] = Field(
        "auto", description="The subset of target_modules that are feed-forward layers (scaled on their input)."
    )
    modules_to_save: list[str] | None = Field(
        None, description="Extra modules trained fully; empty: the new task head for classification."
    )


def ia3_modules(model: PreTrainedModel, params: IA3Params) -> tuple[list[str], list[str]]:
    """(target, feed-forward) module names: the recipe's, else peft's map for the architecture."""
    model_type = getattr(model.config, "model_type", "")
    targets = params.target_modules
    feedforward = params.feedforward_modules
    if targets == "auto":
        if model_type not in TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING:
            raise UsageError(f"method 'ia3' has no default target modules for model type '{model_type}'; "
                             "set method.target_modules and method.feedforward_modules")
        targets = TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING[model_type]
    if feedforward == "auto":
        if params.target_modules != "auto":
            raise UsageError("method 'ia3': with your own target_modules, name the feed-forward ones too "
                             "(method.feedforward_modules, a subset of target_modules; [] if none)")
        feedforward = TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING.get(model_type, [])
    return list(targets), list(feedforward)


@register
class IA3(Method):
    name = "ia3"
    summary = "(IA)^3: learned scaling vectors on attention/FFN activations; far fewer weights than LoRA."
    params_model = IA3Params
    is_adapter = True

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        targets, feedforward = ia3_modules(model, self.params)
        config = IA3Config(
            target_modules=targets,
            feedforward_modules=feedforward,
            modules_to_save=modules_to_save_for(model, task, self.params.modules_to_save),
            task_type=peft_task_type(task),
        )
        return wrap_peft(model, config, self.name)


class PromptParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    num_virtual_tokens: int = Field(20, ge=1, description="Learned soft tokens prepended to every input.")


class PromptTuningParams(PromptParams):
    init_text: str | None = Field(
        None, description="Start the soft prompt from this text's token embeddings (default: random vectors)."
    )


class PrefixTuningParams(PromptParams):
    prefix_projection: bool = Field(False, description="Reparameterise the prefix through a 2-layer MLP.")
    encoder_hidden_size: int | None = Field(
        None, ge=1, description="Hidden width of that MLP (default: the model's width)."
    )


class PTuningParams(PromptParams):
    encoder_type: Literal["MLP", "LSTM"] = Field("MLP", description="Prompt encoder network.")
    encoder_hidden_size: int | None = Field(None, ge=1, description="Prompt encoder width (default: model width).")
    encoder_num_layers: int = Field(2, ge=1, description="Layers of the prompt encoder (LSTM only).")
    encoder_dropout: float = Field(0.0, ge=0, lt=1)


def hidden_size(model: PreTrainedModel) -> int:
    """The model's token width under its config's name for it."""
    for key in ("hidden_size", "n_embd", "d_model"):
        value = getattr(model.config, key, None)
        if isinstance(value, int):
            return value
    raise UsageError(f"cannot tell the hidden size of {type(model).__name__}; set method.encoder_hidden_size")


class _PromptMethod(Method):
    """Shared wrapping for the prompt-learning methods (they need peft's task-specific model classes)."""

    is_adapter = True

    def peft_config(self, model: PreTrainedModel, task_type: str) -> object:
        raise NotImplementedError

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        config = self.peft_config(model, peft_task_type(task))
        config.modules_to_save = modules_to_save_for(model, task, None)  # a classifier's new head trains in full
        return wrap_peft(model, config, self.name)


@register
class PromptTuning(_PromptMethod):
    name = "prompt_tuning"
    summary = "Learn only soft prompt embeddings (a few thousand weights): many tasks on one frozen large model."
    params_model = PromptTuningParams

    def peft_config(self, model: PreTrainedModel, task_type: str) -> object:
        text = self.params.init_text
        if text and not model.name_or_path:
            raise UsageError("method.init_text needs the model's tokenizer: load the model from a folder or hub id")
        return PromptTuningConfig(
            task_type=task_type,
            num_virtual_tokens=self.params.num_virtual_tokens,
            prompt_tuning_init="TEXT" if text else "RANDOM",
            prompt_tuning_init_text=text,
            tokenizer_name_or_path=model.name_or_path if text else None,
        )


@register
class PrefixTuning(_PromptMethod):
    name = "prefix_tuning"
    summary = "Learn key/value prefixes for every attention layer: stronger than prompt tuning, still tiny."
    params_model = PrefixTuningParams

    def peft_config(self, model: PreTrainedModel, task_type: str) -> object:
        return PrefixTuningConfig(
            task_type=task_type,
            num_virtual_tokens=self.params.num_virtual_tokens,
            prefix_projection=self.params.prefix_projection,
            encoder_hidden_size=self.params.encoder_hidden_size or hidden_size(model),
        )


@register
class PTuning(_PromptMethod):
    name = "p_tuning"
    summary = "P-tuning: soft prompt produced by a small MLP/LSTM encoder; steadier training than prompt tuning."
    params_model = PTuningParams

    def peft_config(self, model: PreTrainedModel, task_type: str) -> object:
        return PromptEncoderConfig(
            task_type=task_type,
            num_virtual_tokens=self.params.num_virtual_tokens,
            encoder_reparameterization_type=self.params.encoder_type,
            encoder_hidden_size=self.params.encoder_hidden_size or hidden_size(model),
            encoder_num_layers=self.params.encoder_num_layers,
            encoder_dropout=self.params.encoder_dropout,
        )
