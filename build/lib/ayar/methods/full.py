"""Full fine-tuning: every parameter trains."""

from __future__ import annotations

import torch
from transformers import PreTrainedModel

from ayar.methods import register
from ayar.methods.base import Method


@register
class Full(Method):
    name = "full"
    summary = "Every weight trains: best quality when data and memory allow; saves a full model."

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        for param in model.parameters():
            param.requires_grad_(True)
        return model
