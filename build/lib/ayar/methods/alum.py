"""ALUM (Liu et al., 2020): adversarial regularisation in the embedding space, plus large-batch LR scaling.

Each step perturbs the input embeddings by a small delta found by a few projected gradient-ascent
steps on the KL divergence between clean and perturbed predictions, then adds ``weight`` times the
symmetric KL between clean and perturbed predictions to the task loss: the model learns to give
the same answer for every input within ``epsilon`` of the real one.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from transformers import PreTrainedModel, TrainerCallback

from ayar.console import say
from ayar.methods import register
from ayar.methods.distill import label_positions
from ayar.methods.wrapping import WrappedParams, WrappingMethod


class AlumParams(WrappedParams):

    epsilon: float = Field(1e-2, gt=0, description="Largest perturbation per embedding coordinate (L-inf ball).")
    step_size: float = Field(1e-2, gt=0, description="Size of each projected gradient-ascent step.")
    steps: int = Field(1, ge=1, description="Gradient-ascent steps per training step (each one extra forward "
                       "and backward pass).")
    noise_std: float = Field(1e-5, ge=0, description="Standard deviation of the random starting perturbation.")
    weight: float = Field(1.0, ge=0, description="Weight of the symmetric-KL regulariser beside the task loss.")
    lr_scaling: Literal["none", "linear", "sqrt"] = Field(
        "none", description="Scale the learning rate with the effective batch (batch_size x grad_accum x "
        "devices) relative to reference_batch_size: linear (x k) or sqrt (x sqrt(k)); warm up with "
        "train.warmup_ratio.")
    reference_batch_size: int = Field(32, ge=1, description="The batch size train.learning_rate was tuned for.")


def symmetric_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Mean over items of KL(p || q) + KL(q || p)."""
    log_p, log_q = F.log_softmax(p_logits.float(), -1), F.log_softmax(q_logits.float(), -1)
    per_item = ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1)
    return per_item.mean() if per_item.numel() else per_item.sum()


def kl_to_clean(clean: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """Mean KL(clean || perturbed) over items (the ascent objective; the clean side is fixed)."""
    log_p, log_q = F.log_softmax(clean.float(), -1), F.log_softmax(perturbed.float(), -1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


class AdversarialPerturbation:
    """Finds and applies the embedding perturbation for one batch."""

    def __init__(self, params: AlumParams, task: str) -> None:
        self.params = params
        self.task = task

    def logits_with(self, model: torch.nn.Module, inputs: dict[str, Any], embeds: torch.Tensor) -> torch.Tensor:
        kwargs = {k: v for k, v in inputs.items() if k != "input_ids"}
        logits = model(inputs_embeds=embeds, **kwargs).logits
        return label_positions(logits, inputs["labels"], self.task)[0]

    def regulariser(self, model: torch.nn.Module, inputs: dict[str, Any], clean_logits: torch.Tensor) -> torch.Tensor:
        """weight * symmetric KL between clean and adversarially perturbed predictions (with gradients)."""
        clean = label_positions(clean_logits, inputs["labels"], self.task)[0]
        embeds = model.get_input_embeddings()(inputs["input_ids"])
        delta = torch.randn_like(embeds) * self.params.noise_std
        for _ in range(self.params.steps):
            delta.requires_grad_(True)
            adv = self.logits_with(model, inputs, embeds.detach() + delta)
            (grad,) = torch.autograd.grad(kl_to_clean(clean.detach(), adv), delta)
            # Normalised ascent step, as in ALUM: the step size is independent of the KL's scale.
            step = grad / (grad.abs().amax(-1, keepdim=True) + 1e-12)
            delta = (delta.detach() + self.params.step_size * step).clamp(-self.params.epsilon, self.params.epsilon)
        adv = self.logits_with(model, inputs, embeds + delta.detach())
        return self.params.weight * symmetric_kl(clean, adv)


class ScaleLearningRate(TrainerCallback):
    """Multiplies every param group's learning rate (and the scheduler's base) once, before the first step."""

    def __init__(self, mode: str, reference: int) -> None:
        self.mode, self.reference = mode, reference
        self.factor = 1.0

    def factor_for(self, effective_batch: int) -> float:
        ratio = effective_batch / self.reference
        return ratio if self.mode == "linear" else math.sqrt(ratio)

    def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, lr_scheduler: Any = None,
                       **kwargs: Any) -> None:
        effective = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(args.world_size, 1)
        self.factor = self.factor_for(effective)
        if optimizer is None or self.factor == 1.0:
            return
        for group in optimizer.param_groups:
            group["lr"] *= self.factor
            if "initial_lr" in group:
                group["initial_lr"] *= self.factor
        if lr_scheduler is not None and hasattr(lr_scheduler, "base_lrs"):
            lr_scheduler.base_lrs = [lr * self.factor for lr in lr_scheduler.base_lrs]
        say(f"alum: effective batch {effective} vs reference {self.reference}: learning rate x {self.factor:.3g} "
              f"({self.mode})")


@register
class Alum(WrappingMethod):
    name = "alum"
    summary = "Adversarial training in embedding space (ALUM): steadier, more robust fine-tuning; ~2-3x the compute."
    params_model = AlumParams

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.perturbation = AdversarialPerturbation(self.params, "causal_lm")
        self.lr_scale = ScaleLearningRate(self.params.lr_scaling, self.params.reference_batch_size)

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        self.perturbation = AdversarialPerturbation(self.params, task)
        return super().prepare_model(model, task)

    def callbacks(self) -> list[TrainerCallback]:
        extra = [] if self.params.lr_scaling == "none" else [self.lr_scale]
        return [*super().callbacks(), *extra]

    def extra_loss(self, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        if self.params.weight == 0:
            return None
        return self.perturbation.regulariser(model, inputs, outputs.logits)
