"""Training precision: which one this machine runs (``auto``), and frozen matmul weights stored in the autocast dtype."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from ayar.errors import UsageError

if TYPE_CHECKING:
    from ayar.methods.base import Method


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as /proc/cpuinfo lists them (empty where there is none), read once a process."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def resolve_precision(precision: str, cpu_bf16: bool | None = None) -> str:
    """fp32/bf16/fp16 for this machine; fp16 only on CUDA (CPUs have no fast fp16 matmul: docs/performance.md).

    ``auto`` is bf16 on a GPU that has it and on a CPU with native bf16 units (AVX-512 BF16, AMX),
    where bf16 autocast trains faster at the same held-out loss (docs/performance.md); fp32 elsewhere.
    ``cpu_bf16`` says whether the CPU has such units (None: read this CPU's flags), so a caller that
    measured it, or a test, decides without the host.
    """
    cuda = torch.cuda.is_available()
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if (cpu_has_fast_bf16() if cpu_bf16 is None else cpu_bf16) else "fp32"
    if precision == "fp16" and not cuda:
        raise UsageError("train.precision fp16 needs a CUDA GPU; use bf16 or fp32 on a CPU")
    return precision


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


def skip_adapter_input_casts(model: nn.Module, precision: str) -> int:
    """Under bf16 autocast, let peft's adapter layers take their input as it comes; return how many layers.

    peft casts an adapter's input to the adapter weights' dtype (fp32) and autocast casts it back to bf16
    for the matmul: two copies of each bf16 activation (the MLP's 1536-wide one in SmolLM2) per layer and
    step, for the same bf16 operands (bf16 -> fp32 -> bf16 is exact), so skipping them changes no value.
    """
    if precision != "bf16":
        return 0
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.cast_input_dtype_enabled = False
    return len(layers)
