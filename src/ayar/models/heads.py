"""A causal LM's output layer, found and set aside: the logits of only the tokens that need them.

A 49k-vocabulary head is a fifth of a 135M model's multiplies and its logits the largest tensors of a
step; training's chunked loss, self-distillation and evaluation's log-likelihoods take the layer's input
instead and apply the layer to the tokens they score.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn

# Architectures whose output layer's result *is* the logits (no soft-capping or scaling after it),
# so the loss may be computed from the layer's input and weight.
CHUNKED_LOSS_MODEL_TYPES = frozenset({
    "gpt2", "llama", "mistral", "qwen2", "qwen3", "gpt_neox", "phi3", "olmo2", "smollm3", "opt",
})


def output_layer(model: nn.Module) -> tuple[nn.Module, str, nn.Linear] | None:
    """(parent module, attribute, layer) of a causal LM's plain linear output layer, or None where it has none.

    None for architectures outside ``CHUNKED_LOSS_MODEL_TYPES``, a head with a bias, and a head that a
    method wrapped (LoRA on ``lm_head``): their logits are not ``hidden @ weight.T``.
    """
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in CHUNKED_LOSS_MODEL_TYPES:
        return None
    getter = getattr(model, "get_output_embeddings", None)
    head = getter() if getter else None
    if type(head) is not nn.Linear or head.bias is not None:
        return None
    for module in model.modules():
        for name, child in module.named_children():
            if child is head:
                return module, name, head
    return None


@contextmanager
def hidden_states_as_logits(parent: nn.Module, attribute: str) -> Iterator[None]:
    """The model's forward returns the output layer's input in place of the logits while inside."""
    head = getattr(parent, attribute)
    setattr(parent, attribute, nn.Identity())
    try:
        yield
    finally:
        setattr(parent, attribute, head)
