"""Tokenize chat records for causal-LM training, masking prompt tokens out of the loss."""

from __future__ import annotations

from typing import Any

from ayar.data.templates import render_prompt

IGNORE_INDEX = -100  # labels with this value are skipped by the cross-entropy loss


def _segments(tokenizer: Any, messages: list[dict[str, str]]) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, is_response) pieces.

    Each assistant turn is the difference between the conversation rendered up to it (with the
    generation prompt) and rendered through it, so the prompt side is exactly what generation sees.
    """
    pieces: list[tuple[str, bool]] = []
    done = ""
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render_prompt(tokenizer, messages[:index])
        through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not prompt.startswith(done) or not through.startswith(prompt):
            raise ValueError("chat template does not render conversations as prefixes of each other")
        pieces.append((prompt[len(done):], False))
        response = through[len(prompt):]
        eos = tokenizer.eos_token
        if eos and eos in response:  # what a template puts after the end token is context, not a target
            cut = response.index(eos) + len(eos)
            response, tail = response[:cut], response[cut:]
            pieces.append((response, True))
            if tail:
                pieces.append((tail, False))
        else:
            pieces.append((response, True))
        done = through
    while pieces and not pieces[-1][1]:  # nothing after the last response is trained or needed
        pieces.pop()
    return pieces


def tokenize_chat(
    tokenizer: Any, messages: list[dict[str, str]], max_length: int, mask_prompt: bool = True
) -> dict[str, list[int]]:
    """Token ids and labels for one conversation; an EOS ends every response."""
    input_ids: list[int] = []
    labels: list[int] = []
    eos = tokenizer.eos_token
    for text, is_response in _segments(tokenizer, messages):
        if is_response and eos and eos not in text:
            text = text.rstrip("\n") + eos  # templates without an end token still teach the model to stop
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        input_ids += ids
        labels += ids if (is_response or not mask_prompt) else [IGNORE_INDEX] * len(ids)
    if tokenizer.bos_token_id is not None and getattr(tokenizer, "add_bos_token", False):
        input_ids, labels = [tokenizer.bos_token_id] + input_ids, [IGNORE_INDEX] + labels
    return {"input_ids": input_ids[:max_length], "labels": labels[:max_length]}


def tokenize_text(tokenizer: Any, text: str, max_length: int) -> dict[str, list[int]]:
    """Plain continued pretraining: every token is a label."""
    ids = tokenizer(text + (tokenizer.eos_token or ""), add_special_tokens=False)["input_ids"][:max_length]
    return {"input_ids": ids, "labels": list(ids)}
