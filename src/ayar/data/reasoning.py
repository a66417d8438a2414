"""Reasoning traces in chat records: read in the shapes thinking models brought, kept in one internal form.

The internal form is the OpenAI/DeepSeek one, which Qwen3-style chat templates read: an assistant message's
reasoning under ``reasoning_content``, its ``content`` the final answer alone. Records give the reasoning
in that field (or ``reasoning``, as newer OpenAI-compatible servers name it), or as a ``<think>...</think>``
block at the start of the assistant content. A think block later in the content is text like any other.

What training does with it (``data.reasoning``): ``learn`` it like the answer, ``mask`` it (in the input,
never a label), or ``drop`` it from the text.
"""

from __future__ import annotations

import re
from typing import Any

from ayar.data.chat import RecordError
from ayar.recipe.data_config import ReasoningMode

REASONING_FIELDS = ("reasoning_content", "reasoning")  # the first present wins
REASONING_KEY = "reasoning_content"  # the internal message's key
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
_LEADING_THINK = re.compile(r"\s*<think>(.*?)</think>\s*", re.DOTALL)
_OPENS = re.compile(r"\s*" + re.escape(THINK_OPEN))


def split_think(content: str) -> tuple[str, str] | None:
    """(reasoning, answer) of a content that starts with a ``<think>...</think>`` block, else None.

    The reasoning loses the whitespace around it (templates write their own), the answer the whitespace
    before it.
    """
    match = _LEADING_THINK.match(content)
    if match is None:
        return None
    return match.group(1).strip(), content[match.end():]


def raw_reasoning(turn: dict[str, Any], where: str) -> str | None:
    """A source turn's reasoning field (``reasoning_content`` or ``reasoning``), or None when it has none."""
    for key in REASONING_FIELDS:
        value = turn.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise RecordError(f"{where}.{key} must be a string, got {type(value).__name__}")
        return value.strip() or None
    return None


def with_reasoning(message: dict[str, Any], turn: dict[str, Any] | None = None, where: str = "message") -> None:
    """Put an assistant message in the internal form, in place: reasoning from ``turn``'s field (the message as
    the record holds it), else from a think block leading the content. An empty trace leaves it as it was."""
    if message["role"] != "assistant":
        return
    reasoning = raw_reasoning(turn, where) if turn is not None else None
    if reasoning is None:
        found = split_think(message["content"])
        if found is None or not found[0]:
            return
        reasoning, message["content"] = found
    message[REASONING_KEY] = reasoning


def has_reasoning(messages: list[dict[str, Any]]) -> bool:
    """Whether any message of a conversation carries a reasoning trace."""
    return any(m.get(REASONING_KEY) for m in messages)


def inline_think(reasoning: str, content: str) -> str:
    """Reasoning and answer as one content, in the layout Qwen3 and DeepSeek-R1 templates render."""
    return f"{THINK_OPEN}\n{reasoning}\n{THINK_CLOSE}\n\n{content}"


def without_reasoning(message: dict[str, Any]) -> dict[str, Any]:
    """The message without its reasoning trace."""
    return {k: v for k, v in message.items() if k != REASONING_KEY}


def as_inline(message: dict[str, Any]) -> dict[str, Any]:
    """The message with its reasoning written into the content as a think block (for templates that
    render content as it is and know no reasoning field)."""
    if not message.get(REASONING_KEY):
        return message
    out = without_reasoning(message)
    out["content"] = inline_think(message[REASONING_KEY], message["content"])
    return out


def reasoning_mode(reasoning: ReasoningMode | None, enable_thinking: bool | None) -> ReasoningMode:
    """The effective ``data.reasoning``: as set, else ``learn`` (``drop`` when thinking is switched off)."""
    if reasoning is not None:
        return reasoning
    return "drop" if enable_thinking is False else "learn"


def prompt_opens_reasoning(prompt: str) -> bool:
    """Whether the rendered prompt ends inside an open think block (the answer starts with reasoning)."""
    return prompt.rstrip().endswith(THINK_OPEN)


def split_reasoning(text: str, opened: bool = False) -> tuple[str | None, str]:
    """(reasoning, content) of a generated answer; reasoning None when there is none (or it is empty).

    ``opened``: the prompt ended with ``<think>``. The reasoning loses the whitespace around it, the content
    the whitespace before it.
    """
    if not opened:
        start = _OPENS.match(text)
        if start is None:
            return None, text
        text = text[start.end():]
    end = text.find(THINK_CLOSE)
    if end < 0:
        return text.strip() or None, ""
    return text[:end].strip() or None, text[end + len(THINK_CLOSE):].lstrip()
