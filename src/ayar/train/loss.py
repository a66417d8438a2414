"""A causal LM's cross-entropy without its full logits: the output layer and the loss, a chunk of tokens at a time.

A model's loss usually materialises the logits of every token (tokens x vocabulary, upcast to fp32),
then their log-softmax and its gradient: on a 50k vocabulary that is several copies of
batch x length x 50,257 floats, the largest tensors of a LoRA step. Here the logits of one chunk of
tokens exist at a time, and the gradients of the hidden states and the output weight are computed in
the same pass (the forward), so the backward only scales them and nothing is recomputed.
Liger-Kernel and Cut Cross-Entropy do this with Triton kernels, which need a GPU; this is their
method in plain torch ops, so it runs on a CPU too.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ayar.data.tokenize import IGNORE_INDEX


class LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of ``hidden @ weight.T`` against ``targets`` (all labelled); gradients made in the forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                chunk: int) -> torch.Tensor:
        device = hidden.device.type
        # Under autocast the model's head multiplies in the autocast dtype (bf16): so do these matmuls,
        # with the weight cast once per step rather than once per chunk.
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        w = weight.detach().to(dtype)
        grad_hidden = torch.empty_like(hidden)
        grad_weight: torch.Tensor | None = None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(device, enabled=False):
            for rows in equal_chunks(hidden.shape[0], chunk):
                h, t = hidden[rows].detach().to(dtype), targets[rows]
                logits = h @ w.T
                top_logit = logits.amax(dim=-1).float()
                # One pass for the gradient: softmax reads the logits in their dtype and computes in fp32;
                # log_softmax + exp + casts took four passes over the largest tensor of the step.
                grad_logits = torch.softmax(logits, dim=-1)
                # log-sum-exp without another pass: the top probability is exp(top_logit - lse), and at
                # least 1/vocab, so its rounding (2^-9 relative in bf16) moves lse by under 0.002 nats.
                lse = top_logit - grad_logits.amax(dim=-1).float().log()
                picked = torch.arange(len(t), device=t.device)
                total += (lse - logits[picked, t].float()).sum()
                del logits
                grad_logits[picked, t] -= 1
                grad_hidden[rows] = grad_logits @ w
                if weight.requires_grad:
                    part = grad_logits.T @ h
                    # fp32 += bf16 adds in place: no zero-filled start, no fp32 temporary per chunk
                    grad_weight = part.float() if grad_weight is None else grad_weight.add_(part)
        # Kept on ctx, not saved for backward: they are made here, and backward scales them in place.
        ctx.grad_hidden, ctx.grad_weight, ctx.weight_dtype = grad_hidden, grad_weight, weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (*gradients_made_in_forward(ctx, grad_output, "LinearCrossEntropy"), None, None)


def gradients_made_in_forward(ctx: Any, grad_output: torch.Tensor,
                              name: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The backward of a function that made its (hidden, weight) gradients in the forward and kept them on
    ``ctx``: both scaled by ``grad_output`` in place, handed over once."""
    grad_hidden, grad_weight = ctx.grad_hidden, ctx.grad_weight
    ctx.grad_hidden = ctx.grad_weight = None  # a second backward through this graph is an error, as usual
    if grad_hidden is None:
        raise RuntimeError(f"{name}'s backward ran twice; its gradients were made once")
    weight_grad = grad_weight.mul_(grad_output).to(ctx.weight_dtype) if grad_weight is not None else None
    return grad_hidden.mul_(grad_output.to(grad_hidden.dtype)), weight_grad


def equal_chunks(size: int, chunk: int) -> list[slice]:
    """Slices covering ``range(size)`` in as few pieces of at most ``chunk`` as possible, of near-equal length.

    Equal pieces, because a short last piece costs a whole pass over the output weight for few tokens.
    """
    pieces = max(1, -(-size // chunk))
    bounds = [size * i // pieces for i in range(pieces + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def chunk_tokens(vocab_size: int) -> int:
    """Tokens per chunk: about 32M logits (128 MB in fp32) at a time, never fewer than 128 tokens.

    Smaller chunks save little more memory and make the output-weight gradient's matmuls less efficient
    (the measurement is in docs/performance.md, "The chunked loss").
    """
    return max(128, 2**25 // vocab_size)


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor,
                         num_items_in_batch: torch.Tensor | int | None = None,
                         chunk: int | None = None) -> torch.Tensor:
    """Next-token cross-entropy of a causal LM from its last hidden states (B, T, H) and output weight.

    Labels are shifted as transformers' ``ForCausalLMLoss`` shifts them; the result is the mean over
    labelled tokens, or their sum over ``num_items_in_batch`` (the Trainer's gradient-accumulation count).
    Only labelled positions reach the output layer: a masked prompt costs no logits at all.
    """
    targets = nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)[:, 1:].reshape(-1).to(hidden.device)
    labelled = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    picked = hidden.reshape(-1, hidden.shape[-1]).index_select(0, labelled)
    total = LinearCrossEntropy.apply(picked, weight, targets[labelled], chunk or chunk_tokens(weight.shape[0]))
    count = num_items_in_batch if num_items_in_batch is not None else len(labelled)
    if torch.is_tensor(count):
        count = count.to(total.device)
    return total / count
