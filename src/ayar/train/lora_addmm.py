"""LoRA's update added inside its second matmul: ``addmm(base(x), A(x), Bᵀ, alpha=scaling)``.

peft computes a LoRA layer as ``base(x) + lora_B(lora_A(x)) * scaling``: after the two rank-r matmuls, a
multiplication and an addition over the whole output (tokens × out_features) in the forward pass, and
the multiplication again in the backward one. In SmolLM2's LoRA step on a CPU these elementwise passes
over the seven adapted layers' outputs are a large share of the step: a memory-bound pass costs about as
much as the small matmul that precedes it. ``torch.addmm`` takes the base output as the matrix it adds to
and the scaling as its ``alpha``, so the BLAS kernel writes ``base + scaling · (A x) Bᵀ`` in one pass, and
its backward scales only the rank-r operands' gradients (tokens × r and r × out_features). peft has no such
option, hence this forward, set on each vanilla LoRA layer (no DoRA or other variant, no LoRA bias).

Used in bf16 only: there the sum rounds once (the kernel accumulates in fp32) where peft's rounds the
product, the scaled product and the sum, so losses and gradients agree within bf16 rounding
(``tests/unit/train/test_lora_addmm.py``); fp32 training keeps peft's own forward, so fp32 figures are the
same as before on every CPU kind.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn


def use_lora_addmm(model: nn.Module, precision: str) -> int:
    """Give each vanilla LoRA linear layer of ``model`` the addmm forward when training in bf16; return how many."""
    if precision != "bf16":
        return 0
    from peft.tuners.lora.layer import Linear as LoraLinear

    layers = [m for m in model.modules() if type(m) is LoraLinear]
    for layer in layers:
        layer.forward = functools.partial(lora_addmm_forward, layer)
    return len(layers)


def undo_lora_addmm(model: nn.Module) -> int:
    """peft's own forward again on every layer :func:`use_lora_addmm` changed; return how many."""
    undone = 0
    for module in model.modules():
        forward = module.__dict__.get("forward")
        if isinstance(forward, functools.partial) and forward.func is lora_addmm_forward:
            del module.forward
            undone += 1
    return undone


def lora_addmm_forward(layer: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    """One peft LoRA ``Linear`` forward with the update added by addmm; peft's own wherever it is not plain LoRA."""
    adapter = _single_plain_adapter(layer)
    if adapter is None or args or kwargs:
        return type(layer).forward(layer, x, *args, **kwargs)
    result = layer.base_layer(x)
    lora_a, lora_b = layer.lora_A[adapter], layer.lora_B[adapter]
    hidden = lora_a(layer.lora_dropout[adapter](layer._cast_input_dtype(x, lora_a.weight.dtype)))
    if not (torch.is_autocast_enabled(result.device.type) or result.dtype == hidden.dtype == lora_b.weight.dtype):
        # mixed dtypes outside autocast: addmm takes one dtype, peft's sum promotes
        return (result + lora_b(hidden) * layer.scaling[adapter]).to(result.dtype)
    out = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]), lora_b.weight.t(),
                      alpha=layer.scaling[adapter])
    return out.view(result.shape).to(result.dtype)


def _single_plain_adapter(layer: Any) -> str | None:
    """The one active adapter when it is vanilla LoRA on an unmerged, enabled layer; else None."""
    if layer.disable_adapters or layer.merged or len(layer.active_adapters) != 1:
        return None
    adapter = layer.active_adapters[0]
    if adapter not in layer.lora_A or adapter in getattr(layer, "lora_variant", {}):
        return None
    if layer.lora_B[adapter].bias is not None:
        return None
    return adapter
