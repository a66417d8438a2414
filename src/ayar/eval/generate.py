"""Batched generation with the tokenizer's saved chat template and configurable decoding."""

from __future__ import annotations

from typing import Any

import torch

from ayar.data.templates import end_of_turn, render_prompt
from ayar.models import opening
from ayar.recipe import EvalConfig


def cut_at_stop(text: str, stops: list[str]) -> str:
    """The text up to the first stop string."""
    cut = len(text)
    for stop in stops:
        index = text.find(stop)
        if stop and index != -1:
            cut = min(cut, index)
    return text[:cut]


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Ids that end an answer: eos, the model's generation_config eos ids, and the chat template's
    end-of-turn token (``<|im_end|>`` for ChatML), which a chat model emits instead of eos.
    """
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ids = {tokenizer.eos_token_id, *(configured if isinstance(configured, list) else [configured])}
    turn_end = end_of_turn(tokenizer) if getattr(tokenizer, "chat_template", None) else None
    if turn_end is not None:
        ids.add(tokenizer.convert_tokens_to_ids(turn_end))
    return sorted(i for i in ids if i is not None)


def _decoding(cfg: EvalConfig) -> dict[str, Any]:
    """generate() keyword arguments for the recipe's decoding settings (greedy or sampling)."""
    return {"max_new_tokens": cfg.max_new_tokens, "do_sample": cfg.do_sample,
            "temperature": cfg.temperature if cfg.do_sample else None,
            "top_p": cfg.top_p if cfg.do_sample else None,
            "top_k": cfg.top_k if cfg.do_sample else None}


def context_length(model: Any) -> int:
    """The longest input the model takes (its position limit)."""
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if value:
            return int(value)
    return 1024


@torch.inference_mode()
def generate(model: Any, tokenizer: Any, prompts: list[str], cfg: EvalConfig, seed: int = 0) -> list[str]:
    """Complete each prompt text; returns only the new text, cut at stop strings."""
    model.eval()
    sides = tokenizer.padding_side, tokenizer.truncation_side
    # decoder-only generation continues from the right edge; a prompt too long for the context loses its start
    tokenizer.padding_side = tokenizer.truncation_side = "left"
    room = max(1, context_length(model) - cfg.max_new_tokens)
    stops = stop_token_ids(model, tokenizer)
    outputs: list[str] = []
    try:
        for start in range(0, len(prompts), cfg.batch_size):
            batch = _batch_inputs(model, tokenizer, prompts[start : start + cfg.batch_size], room)
            if cfg.do_sample:
                torch.manual_seed(seed + start)
            new = model.generate(
                **batch, **_decoding(cfg), pad_token_id=tokenizer.pad_token_id, eos_token_id=stops,
            )[:, batch["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            outputs += [cut_at_stop(t, cfg.stop) for t in texts]
    finally:
        tokenizer.padding_side, tokenizer.truncation_side = sides
    return outputs


def _batch_inputs(model: Any, tokenizer: Any, prompts: list[str], room: int) -> dict[str, Any]:
    """generate()'s inputs for one batch: left-padded ids, or, where the prompts open alike (a chat
    template's system prompt is most of a short question's tokens), the shared opening run once and its
    cache handed to generate, with each row's padding after the opening, masked out."""
    rows = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    shared = opening.shared_opening(rows)
    opened = None
    if (len(rows) > 1 and shared >= opening.MIN_SHARED_TOKENS and max(map(len, rows)) <= room
            and not opening.is_prompt_learning(model)):
        opened = opening.opening_cache(model, rows[0][:shared], len(rows))
    if opened is None:
        return tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False, truncation=True,
                         max_length=room).to(model.device)
    cache = opened[0]
    width = max(map(len, rows)) - shared
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), shared + width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    ids[:, :shared], mask[:, :shared] = torch.tensor(rows[0][:shared], dtype=torch.long), 1
    for i, row in enumerate(rows):
        rest = row[shared:]
        ids[i, ids.shape[1] - len(rest):], mask[i, ids.shape[1] - len(rest):] = torch.tensor(rest, dtype=torch.long), 1
    # positions follow the mask (generate counts them from it), so each row's text continues its opening
    return {"input_ids": ids.to(model.device), "attention_mask": mask.to(model.device), "past_key_values": cache}


def generate_chat(model: Any, tokenizer: Any, conversations: list[list[dict[str, Any]]], cfg: EvalConfig,
                  tools: list[list[dict[str, Any]] | None] | None = None) -> list[str]:
    """Generate the assistant's reply to each conversation, formatted with the saved chat template
    (with the conversation's tools, when given)."""
    tools = tools or [None] * len(conversations)
    prompts = [render_prompt(tokenizer, c, t) for c, t in zip(conversations, tools, strict=True)]
    return generate(model, tokenizer, prompts, cfg)


@torch.inference_mode()
def generate_seq2seq(model: Any, tokenizer: Any, sources: list[str], cfg: EvalConfig, max_length: int,
                     seed: int = 0) -> list[str]:
    """Decode a target for each source with an encoder-decoder model, batched."""
    model.eval()
    outputs: list[str] = []
    for start in range(0, len(sources), cfg.batch_size):
        batch = tokenizer(sources[start : start + cfg.batch_size], return_tensors="pt", padding=True,
                          truncation=True, max_length=max_length).to(model.device)
        if cfg.do_sample:
            torch.manual_seed(seed + start)
        new = model.generate(**batch, **_decoding(cfg))
        outputs += [cut_at_stop(t, cfg.stop) for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return outputs
