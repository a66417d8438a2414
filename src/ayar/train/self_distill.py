"""``train.self_distill``: a KL term that keeps the tuned model's next-token distribution on general prompts
close to its base's (the model before this fine-tune), beside the task loss.

loss = task loss + weight * mean over general tokens of KL(base || tuned).

Rehearsal keeps only the base's greedy answer to a general prompt; this keeps its whole distribution, at
every position of the prompt (general language in English and Turkish) and where the answer starts (the
position at which a narrow fine-tune starts answering everything in a word or two). Prompts are the
built-in general instructions (the rehearsal set, none of them a forgetting probe) or a file; rows of a
.jsonl file with an ``output`` (the base's own answer) are distilled over the answer too.

The base is the model with its adapter switched off (``disable_adapter``: no second copy) or, for a method
that changes the weights themselves, a frozen copy made before training. The KL is computed from the
hidden states a chunk of tokens at a time, like ayar's chunked loss, so the general batch's full logits
(tokens x 49k vocabulary for SmolLM2) never exist at once. Under ``train.shared_opening`` the chat template's
opening, the same in every general prompt, runs once in the forward and is scored once at the output layer.
"""

from __future__ import annotations

import contextlib
import copy
import random
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from ayar.data.rehearsal import load_prompts
from ayar.data.templates import render_conversation, render_prompt
from ayar.errors import UsageError
from ayar.models.heads import hidden_states_as_logits, output_layer
from ayar.models.load import unwrapped
from ayar.models.opening import common_opening, drops_out, forward_with_shared_opening, right_padded
from ayar.recipe import RehearsalConfig, SelfDistillConfig
from ayar.train.loss import chunk_tokens, equal_chunks, gradients_made_in_forward


class LinearKL(torch.autograd.Function):
    """Summed KL(softmax(teacher @ Wt.T) || softmax(hidden @ W.T)) over rows, row i counted ``weights[i]``
    times (once each without weights); gradients made in the forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, teacher_hidden: torch.Tensor,
                teacher_weight: torch.Tensor, chunk: int, weights: torch.Tensor | None = None) -> torch.Tensor:
        device = hidden.device.type
        dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
        w, wt = weight.detach().to(dtype), teacher_weight.detach().to(dtype)
        grad_hidden = torch.empty_like(hidden)
        grad_weight: torch.Tensor | None = None
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        with torch.autocast(device, enabled=False):
            for rows in equal_chunks(hidden.shape[0], chunk):
                h = hidden[rows].detach().to(dtype)
                log_teacher = torch.log_softmax((teacher_hidden[rows].to(dtype) @ wt.T).float(), dim=-1)
                log_student = torch.log_softmax((h @ w.T).float(), dim=-1)
                teacher = log_teacher.exp()
                # in place where a buffer is free: each of these is tokens x vocabulary (49k for SmolLM2)
                per_row = log_teacher.sub_(log_student).mul_(teacher).sum(dim=-1)
                grad_logits = log_student.exp_().sub_(teacher).to(dtype)  # d KL / d student logits
                del log_teacher, teacher
                grad_hidden[rows] = grad_logits @ w
                if weights is not None:  # a row counted n times: n times its KL and its gradients
                    row_weights = weights[rows, None]
                    per_row = per_row * row_weights[:, 0].to(per_row.dtype)
                    grad_hidden[rows] *= row_weights.to(grad_hidden.dtype)
                    h = h * row_weights.to(dtype)  # for the output weight's gradient below
                total += per_row.sum()
                if weight.requires_grad:
                    part = grad_logits.T @ h
                    grad_weight = part.float() if grad_weight is None else grad_weight.add_(part)
        ctx.grad_hidden, ctx.grad_weight, ctx.weight_dtype = grad_hidden, grad_weight, weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (*gradients_made_in_forward(ctx, grad_output, "LinearKL"), None, None, None, None)


def distinct_positions(model: nn.Module, ids: torch.Tensor, mask: torch.Tensor, shared_opening: bool
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The flat positions of a batch's real tokens the KL is scored at, and how many rows each stands for.

    Under ``shared_opening``, where every row opens alike (the chat template's system prompt), a causal model's
    outputs at the opening are the same in every row: the first row's stand for all of them, each counted once
    per row, so the output layer's 49k-vocabulary work at the opening is done once. None: every real
    position, once each.
    """
    real = mask.reshape(-1).nonzero().squeeze(1)
    rows, width = ids.shape
    opening = common_opening(ids, mask) if shared_opening and rows > 1 and not drops_out(model) else 0
    if opening == 0:
        return real, None
    after_opening = real[real % width >= opening]
    positions = torch.cat([torch.arange(opening, device=real.device), after_opening])
    weights = torch.cat([torch.full((opening,), float(rows), device=real.device),
                         torch.ones(len(after_opening), device=real.device)])
    return positions, weights


def general_sequences(tokenizer: Any, cfg: SelfDistillConfig) -> list[list[int]]:
    """Token ids of each general prompt in the chat template, up to the assistant's header, or through the
    base's answer where the prompt file carries one."""
    sequences = []
    for prompt, answer in load_prompts(RehearsalConfig(prompts=cfg.prompts)):
        messages = [{"role": "user", "content": prompt}]
        text = (render_conversation(tokenizer, [*messages, {"role": "assistant", "content": answer}]) if answer
                else render_prompt(tokenizer, messages))
        sequences.append(tokenizer(text, add_special_tokens=False)["input_ids"][: cfg.max_length])
    return sequences


class SelfDistillation:
    """The KL term of one training run: its general batches (seeded, cycling) and its base."""

    def __init__(self, model: nn.Module, tokenizer: Any, cfg: SelfDistillConfig, seed: int,
                 shared_opening: bool = False) -> None:
        self.cfg = cfg
        self.shared_opening = shared_opening
        self.sequences = general_sequences(tokenizer, cfg)
        self.order = random.Random(seed)
        self.batches = self._batches()
        # An adapter is switched off to get the base; weights a method changes need a frozen copy of them.
        self.frozen_base = None if hasattr(model, "disable_adapter") else copy.deepcopy(model).eval().requires_grad_(False)
        if output_layer(unwrapped(model)) is None:
            raise UsageError("train.self_distill needs a causal LM with a plain linear output layer (a "
                             f"{getattr(model.config, 'model_type', '?')} model, or LoRA on lm_head, has none)")

    def _batches(self) -> Iterator[list[list[int]]]:
        while True:
            order = list(range(len(self.sequences)))
            self.order.shuffle(order)
            for start in range(0, len(order), self.cfg.batch_size):
                yield [self.sequences[i] for i in order[start:start + self.cfg.batch_size]]

    def _hidden(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, nn.Linear]:
        parent, attribute, layer = output_layer(unwrapped(model))
        with hidden_states_as_logits(parent, attribute):
            if self.shared_opening:  # the general prompts open with the chat template's system prompt
                return forward_with_shared_opening(model, ids, mask).logits, layer
            return model(input_ids=ids, attention_mask=mask).logits, layer

    def loss(self, model: nn.Module, autocast: Any = contextlib.nullcontext) -> torch.Tensor:
        """weight x the mean KL(base || tuned) per general token of the next batch."""
        ids, mask = right_padded(next(self.batches), next(model.parameters()).device)
        hidden, layer = self._hidden(model, ids, mask)
        with torch.no_grad():
            if self.frozen_base is None:
                with model.disable_adapter():
                    teacher_hidden, teacher_layer = self._hidden(model, ids, mask)
            else:
                teacher_hidden, teacher_layer = self._hidden(self.frozen_base, ids, mask)
        positions, weights = distinct_positions(model, ids, mask, self.shared_opening)
        flat, teacher_flat = (h.reshape(-1, h.shape[-1]).index_select(0, positions) for h in (hidden, teacher_hidden))
        with autocast():
            total = LinearKL.apply(flat, layer.weight, teacher_flat, teacher_layer.weight,
                                   chunk_tokens(layer.weight.shape[0]), weights)
        return self.cfg.weight * total / int(mask.sum())
