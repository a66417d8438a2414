"""GRPO: reinforcement learning from verifiable rewards through TRL's ``GRPOTrainer``.

For each prompt the policy samples a group of answers (``num_generations``), the rewards score them
(:mod:`ayar.methods.grpo_rewards`: the generated task's checker, a format or length reward, or the user's
function) and each answer's advantage is its reward against its group's mean: answers better than their
siblings become more likely. No loss is written here; TRL's trainer (with ayar's mixin in front, through
``ayar.train.trainer.build_trainer``) does the sampling and the update, and ``ayar.train.grpo`` is the
run kind. Over a ``lora`` base TRL wraps the model with the adapter, and a start model that is already an
adapter (a run folder's model) keeps training that adapter; ``beta`` > 0 adds a KL term to the start model
(a new adapter switched off, or TRL's frozen copy of a start adapter).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from transformers import PreTrainedModel

from ayar.console import say
from ayar.methods import register
from ayar.methods.base import Method, TrainerSpec
from ayar.methods.grpo_rewards import RewardSpec, reward_functions
from ayar.methods.lora import LoraParams, lora_config

LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo")  # TRL 1.16's GRPOConfig


class GrpoParams(BaseModel):
    """GRPO's sampling, loss and rewards, and the base that holds the trainable weights."""

    model_config = ConfigDict(extra="forbid")

    base: Literal["lora", "full"] = Field(
        "lora", description="lora: an adapter on the frozen base (a start model that is an adapter keeps "
        "training it); full: every weight trains.")
    base_params: dict[str, Any] = Field(default_factory=dict, description="The LoRA parameters for base lora "
                                        "(r, alpha, target_modules...); ignored when the start model is an adapter.")
    num_generations: int = Field(4, ge=2, description="Answers sampled per prompt (the group each answer's reward "
                                 "is compared within); train.batch_size x grad_accum must be a multiple of it.")
    beta: float = Field(0.0, ge=0, description="KL coefficient against the start model (a new adapter switched "
                        "off, or a frozen copy of a start adapter); 0 loads no reference.")
    loss_type: Literal[LOSS_TYPES] = Field("dapo", description="TRL's GRPO loss: grpo, dr_grpo, dapo, bnpo, cispo, "
                                           "sapo, luspo, vespo.")
    max_completion_length: int = Field(32, gt=0, description="The longest sampled answer, in tokens.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature of the answers.")
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Advantages divided by the group's reward spread (group), the batch's, or not (none).")
    answer_tag: str | None = Field(None, pattern=r"^[A-Za-z_][\w-]*$", description="When set, the answer reward "
                                   "reads the answer inside <answer_tag>...</answer_tag> (0 without it).")
    rewards: list[RewardSpec] = Field(default_factory=lambda: [RewardSpec(name="answer")],
                                      description="The rewards and their weights (name: answer, format, length; "
                                      "or function: 'module:name', which runs your own code).")
    use_vllm: bool = Field(False, description="Generate with vLLM in TRL's colocate mode (GPU, vllm installed).")

    @model_validator(mode="after")
    def _valid(self) -> GrpoParams:
        if self.base == "lora":
            LoraParams.model_validate(self.base_params)
        elif self.base_params:
            raise ValueError("base_params must be empty for base 'full'")
        if not self.rewards:
            raise ValueError("rewards must name at least one reward")
        return self


@register
class Grpo(Method):
    name = "grpo"
    summary = ("GRPO: samples a group of answers per prompt and makes the better-rewarded ones likelier "
               "(rewards from the generated tasks' checkers, format, length or your function).")
    tasks = ("causal_lm",)
    params_model: ClassVar[type[BaseModel]] = GrpoParams
    training_run: ClassVar[str] = "grpo"  # ayar.train.grpo: TRL's GRPOTrainer on the prompts

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.is_adapter = self.params.base == "lora"
        self.frozen_weights_matmul_only = self.params.base == "lora"

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        """An adapter start model keeps its adapter trainable; a plain one gets TRL's LoRA or trains every weight."""
        self._peft_config = None
        if hasattr(model, "peft_config"):
            self.is_adapter = True  # whatever the recipe's base, the run saves the start model's adapter
            for name, param in model.named_parameters():
                param.requires_grad_("lora_" in name)
            say(f"method {self.name}: training the start model's adapter further")
        elif self.params.base == "lora":
            self._peft_config = lora_config(model, task, LoraParams.model_validate(self.params.base_params),
                                            use_dora=False)
        else:
            for param in model.parameters():
                param.requires_grad_(True)
        return model

    def trl_config_kwargs(self) -> dict[str, Any]:
        """The recipe's GRPO parameters as GRPOConfig fields."""
        p = self.params
        return {"num_generations": p.num_generations, "beta": p.beta, "loss_type": p.loss_type,
                "max_completion_length": p.max_completion_length, "temperature": p.temperature,
                "scale_rewards": p.scale_rewards, "reward_weights": [r.weight for r in p.rewards],
                "use_vllm": p.use_vllm, "vllm_mode": "colocate", "log_completions": False,
                "remove_unused_columns": False,
                "include_num_input_tokens_seen": "no"}  # TRL's batches carry prompt and completion ids apart

    def trainer_spec(self) -> TrainerSpec:
        """TRL's GRPOTrainer and config with the rewards (call after ``prepare_model``)."""
        from trl import GRPOConfig, GRPOTrainer

        functions, _ = reward_functions(self.params.rewards, self.params.answer_tag)
        return TrainerSpec(GRPOTrainer, GRPOConfig, self.trl_config_kwargs(),
                           {"reward_funcs": functions, "peft_config": getattr(self, "_peft_config", None)})
