"""Attention for training in bf16 on a CPU: short rows through the plain matmul-softmax path, longer ones
through SDPA.

torch's CPU flash-attention kernel (what SDPA runs there) is slow in bf16 for short rows, and its backward
most of all: on a 2-core Xeon with AMX, forward and backward over 30 layers took 3 to 4 times as long as
the plain path up to 128 tokens a row, and from about 192 tokens the plain path is the slower one. On an
EPYC with AVX-512 BF16 and no AMX the plain path stays faster up to 512 tokens (docs/performance.md,
``bench/attention_bench.py``). Chat fine-tuning rows are mostly short, so each attention call picks by the
row length it gets, against the crossover of this CPU kind. transformers has no such choice built in: its
attention is one implementation per model, hence this one, registered beside the library's own under
:data:`NAME`.

The plain path is transformers' own (``eager_attention_forward``: the softmax in fp32), so it computes
what a model loaded with ``attn_implementation="eager"`` computes.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from typing import Any

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, eager_mask
from transformers.models.llama.modeling_llama import eager_attention_forward

from ayar.models.load import unwrapped
from ayar.train.precision import cpu_flags

NAME = "ayar_short_rows"
# Tokens a row at or below which the plain path is the faster one, per CPU kind (measured crossovers)
SHORT_ROWS_AMX = 160  # between 128 and 192
SHORT_ROWS_AVX512_BF16 = 512  # between 512 and 768, where bf16 runs on AVX-512 units without AMX


def short_rows_for(flags: AbstractSet[str]) -> int:
    """The plain path's limit for a CPU with these flags (``/proc/cpuinfo``); AMX's where neither was measured."""
    if "avx512_bf16" in flags and "amx_bf16" not in flags:
        return SHORT_ROWS_AVX512_BF16
    return SHORT_ROWS_AMX


# This CPU's limit, read once at import: every attention call of every layer asks, and under torch.compile a
# function that reads a file would break the graph in each of them
SHORT_ROWS = short_rows_for(cpu_flags())


def short_rows_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                         attention_mask: torch.Tensor | None, scaling: float | None = None, dropout: float = 0.0,
                         **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One attention call: the plain path for rows of at most this CPU's limit, SDPA for longer ones."""
    if query.shape[-2] <= SHORT_ROWS:
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return eager_attention_forward(module, query, key, value, attention_mask, scaling=scale, dropout=dropout,
                                       **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


AttentionInterface.register(NAME, short_rows_attention)
AttentionMaskInterface.register(NAME, eager_mask)  # an additive float mask, which both paths take


def use_short_rows_attention(model: torch.nn.Module, precision: str) -> bool:
    """Switch a model that trains in bf16 on the CPU with SDPA to :data:`NAME`; True when switched.

    Only models whose attention goes through transformers' attention interface with grouped key/value
    heads (Llama, Qwen, Mistral, SmolLM2 and kin) switch; the rest keep what they have.
    """
    if precision != "bf16" or torch.cuda.is_available():
        return False
    base = unwrapped(model)
    config = getattr(base, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not _grouped_attention(base):
        return False
    base.set_attn_implementation(NAME)
    return True


def _grouped_attention(model: torch.nn.Module) -> bool:
    return any(hasattr(m, "num_key_value_groups") for m in model.modules())
