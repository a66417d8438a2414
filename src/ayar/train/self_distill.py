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
(tokens x 49k vocabulary for SmolLM2) never exist at once.
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
from ayar.models.opening import forward_with_shared_opening
from ayar.recipe import RehearsalConfig, SelfDistillConfig
from ayar.train.loss import chunk_tokens, equal_chunks, gradients_made_in_forward


class LinearKL(torch.autograd.Function):
    """Summed KL(softmax(teacher @ Wt.T) || softmax(hidden @ W.T)) over rows; gradients made in the forward."""

    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, teacher_hidden: torch.Tensor,
                teacher_weight: torch.Tensor, chunk: int) -> torch.Tensor:
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
                logits = (h @ w.T).float()
                log_student = torch.log_softmax(logits, dim=-1)
                teacher = log_teacher.exp()
                total += (teacher * (log_teacher - log_student)).sum()
                grad_logits = (log_student.exp_() - teacher).to(dtype)  # d KL / d student logits
                del logits, log_teacher, teacher
                grad_hidden[rows] = grad_logits @ w
                if weight.requires_grad:
                    part = grad_logits.T @ h
                    grad_weight = part.float() if grad_weight is None else grad_weight.add_(part)
        ctx.grad_hidden, ctx.grad_weight, ctx.weight_dtype = grad_hidden, grad_weight, weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        return (*gradients_made_in_forward(ctx, grad_output, "LinearKL"), None, None, None)


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
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
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

    def _collate(self, rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        return ids.to(device), mask.to(device)

    def _hidden(self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, nn.Linear]:
        parent, attribute, layer = output_layer(unwrapped(model))
        with hidden_states_as_logits(parent, attribute):
            if self.shared_opening:  # the general prompts open with the chat template's system prompt
                return forward_with_shared_opening(model, ids, mask).logits, layer
            return model(input_ids=ids, attention_mask=mask).logits, layer

    def loss(self, model: nn.Module, autocast: Any = contextlib.nullcontext) -> torch.Tensor:
        """weight x the mean KL(base || tuned) per general token of the next batch."""
        ids, mask = self._collate(next(self.batches), next(model.parameters()).device)
        hidden, layer = self._hidden(model, ids, mask)
        with torch.no_grad():
            if self.frozen_base is None:
                with model.disable_adapter():
                    teacher_hidden, teacher_layer = self._hidden(model, ids, mask)
            else:
                teacher_hidden, teacher_layer = self._hidden(self.frozen_base, ids, mask)
        real = mask.reshape(-1).nonzero().squeeze(1)
        flat, teacher_flat = (h.reshape(-1, h.shape[-1]).index_select(0, real) for h in (hidden, teacher_hidden))
        with autocast():
            total = LinearKL.apply(flat, layer.weight, teacher_flat, teacher_layer.weight,
                                   chunk_tokens(layer.weight.shape[0]))
        return self.cfg.weight * total / len(real)
