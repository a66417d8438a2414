"""Frozen matmul weights stored in the autocast dtype: the same training in less memory, without per-step casts."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

if TYPE_CHECKING:
    from ayar.methods.base import Method


def store_frozen_weights_for(method: Method, model: nn.Module, precision: str) -> int:
    """The engine's rule: a method whose frozen weights only feed matmuls (LoRA) stores them in bf16 under bf16."""
    if method.frozen_weights_matmul_only and precision == "bf16":
        return store_frozen_matmul_weights(model, torch.bfloat16)
    return 0


def store_frozen_matmul_weights(model: nn.Module, dtype: torch.dtype) -> int:
    """Cast the frozen fp32 weights and biases of Linear/Conv1D layers to ``dtype``; return how many values were cast.

    Under autocast a Linear or Conv1D multiplies in the autocast dtype, so it casts its fp32 weight on
    every forward, and autocast caches only casts of trainable weights: a frozen base is cast again each
    step and held twice. Stored cast, the matmuls get bitwise the same operands. Weights shared with an
    embedding are left alone (the lookup is not autocast), and so are trainable and non-fp32 ones
    (quantized layers subclass Linear).
    """
    shared = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    cast = 0
    for module in model.modules():
        if not isinstance(module, (nn.Linear, Conv1D)):
            continue
        for param in module.parameters(recurse=False):
            if param.requires_grad or param.dtype != torch.float32 or id(param) in shared:
                continue
            param.data = param.data.to(dtype)
            cast += param.numel()
    return cast
