"""The two things every probe asks a causal LM: how likely is a text, and what does it say next."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ayar.eval.generate import generate, generate_chat
from ayar.recipe import EvalConfig


@torch.inference_mode()
def text_logprob(model: Any, tokenizer: Any, texts: list[str], batch_size: int = 32,
                 from_chars: list[int] | None = None) -> list[tuple[float, int]]:
    """Summed log-probability of each text's tokens after the first, and how many tokens were scored.

    With ``from_chars``, only tokens that start at or after that character of their text are summed.
    """
    model.eval()
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "right"  # positions then match an unpadded forward pass
    out = []
    try:
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start:start + batch_size], return_tensors="pt", padding=True,
                              return_offsets_mapping=True)
            offsets = batch.pop("offset_mapping")
            batch = batch.to(model.device)
            ids, mask = batch["input_ids"], batch["attention_mask"]
            scored = mask[:, 1:].clone()
            if from_chars is not None:
                cut = torch.tensor(from_chars[start:start + batch_size])[:, None]
                scored *= (offsets[:, 1:, 0] >= cut).to(scored.device)
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            logprobs = F.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1) * scored
            out += [(float(lp), int(n)) for lp, n in zip(logprobs.sum(1), scored.sum(1), strict=True)]
    finally:
        tokenizer.padding_side = padding_side
    return out


def greedy_config(cfg: EvalConfig, max_new_tokens: int) -> EvalConfig:
    """The eval decoding settings with sampling off, so probes give the same answer every run."""
    return cfg.model_copy(update={"do_sample": False, "max_new_tokens": max_new_tokens})


def chat_replies(model: Any, tokenizer: Any, conversations: list[list[dict[str, str]]], cfg: EvalConfig,
                 max_new_tokens: int) -> list[str]:
    """Greedy replies to conversations, formatted with the model's chat template."""
    return generate_chat(model, tokenizer, conversations, greedy_config(cfg, max_new_tokens))


def continuations(model: Any, tokenizer: Any, prefixes: list[str], cfg: EvalConfig, max_new_tokens: int) -> list[str]:
    """Greedy raw continuations of text prefixes (no chat template)."""
    return generate(model, tokenizer, prefixes, greedy_config(cfg, max_new_tokens))
