"""Chat templates: the one place where records become prompt text.

The template used in training is set on the tokenizer and saved with every model and adapter,
so generation and serving format prompts exactly as training did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ayar.errors import UsageError

# Jinja templates in the Hugging Face chat-template dialect.
ALPACA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'user' %}### Instruction:\n{{ message['content'] }}\n\n"
    "{% elif message['role'] == 'assistant' %}### Response:\n{{ message['content'] }}{{ eos_token }}\n\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Response:\n{% endif %}"
)
CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NAMED_TEMPLATES = {"alpaca": ALPACA, "chatml": CHATML}


def resolve_template(tokenizer: Any, name: str) -> str:
    """The chat template to train with: 'auto' keeps the tokenizer's own, else falls back to alpaca."""
    if name == "auto":
        return tokenizer.chat_template or ALPACA
    if name in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[name]
    if "{%" in name or "{{" in name:  # an inline Jinja template
        return name
    raise UsageError(f"data.template '{name}' is not 'auto', {', '.join(NAMED_TEMPLATES)} or a Jinja template")


def set_template(tokenizer: Any, name: str) -> None:
    """Set the resolved chat template on the tokenizer, so it is saved with it."""
    tokenizer.chat_template = resolve_template(tokenizer, name)


def alpaca_user_message(instruction: str, input_text: str | None) -> str:
    """The user turn of an alpaca record: the instruction, then its input if any."""
    if input_text:
        return f"{instruction}\n\n### Input:\n{input_text}"
    return instruction


def record_to_messages(record: dict[str, Any], system_prompt: str | None = None) -> list[dict[str, str]]:
    """Turn an alpaca, messages or sharegpt record into chat messages."""
    if "messages" in record:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    elif "conversations" in record:
        roles = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
        messages = [{"role": roles[m["from"]], "content": m["value"]} for m in record["conversations"]]
    else:
        messages = [
            {"role": "user", "content": alpaca_user_message(record["instruction"], record.get("input"))},
            {"role": "assistant", "content": record["output"]},
        ]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def render_prompt(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """The prompt text for generation: every message so far plus the assistant's header."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass(frozen=True)
class TurnMarkers:
    """The text a chat template puts around each role's content, found by rendering it (see turn_markers)."""

    wrap: dict[str, tuple[str, str]]
    """role -> (text before the content, text after it)"""
    generation_prompt: str
    default_system: str | None
    """The system message the template adds when a conversation has none (SmolLM2's does)."""

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """The conversation as the template renders it, from the markers alone."""
        if self.default_system is not None and (not messages or messages[0]["role"] != "system"):
            messages = [{"role": "system", "content": self.default_system}, *messages]
        text = "".join(self.wrap[m["role"]][0] + m["content"] + self.wrap[m["role"]][1] for m in messages)
        return text + (self.generation_prompt if add_generation_prompt else "")


_PROBE = [{"role": "system", "content": "\x01S\x01"}, {"role": "user", "content": "\x01U\x01"},
          {"role": "assistant", "content": "\x01A\x01"}, {"role": "user", "content": "\x01V\x01"}]
_CHECKS = [[{"role": "user", "content": "Merhaba!"}],
           [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
            {"role": "assistant", "content": "4"}, {"role": "user", "content": "3+3?"}]]


def turn_markers(tokenizer: Any) -> TurnMarkers | None:
    """Per-role wrappers of the tokenizer's chat template, or None for a template that is not one wrapper per
    role (one that reorders messages, say): found by rendering growing conversations of marked contents,
    then checked against the template on other conversations.
    """

    def render(messages: list[dict[str, str]], generation: bool = False) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    try:
        wrap: dict[str, tuple[str, str]] = {}
        previous = ""
        for k, message in enumerate(_PROBE, start=1):
            text = render(_PROBE[:k])
            if not text.startswith(previous) or message["content"] not in text[len(previous):]:
                return None
            before, after = text[len(previous):].split(message["content"])
            wrap.setdefault(message["role"], (before, after))
            previous = text
        generation_prompt = render(_PROBE, True)[len(previous):]
        user_only = render(_PROBE[1:2])
        alone = wrap["user"][0] + _PROBE[1]["content"] + wrap["user"][1]
        default = None
        if user_only != alone:
            head, (before, after) = user_only[: -len(alone)], wrap["system"]
            if not (user_only.endswith(alone) and head.startswith(before) and head.endswith(after)):
                return None
            default = head[len(before): len(head) - len(after)]
        markers = TurnMarkers(wrap, generation_prompt, default)
        if any(markers.render(c) != render(c, True) for c in _CHECKS):
            return None
        return markers
    except Exception:  # a template that refuses a role (no system turn, say) has no per-role wrappers
        return None


def end_of_turn(tokenizer: Any) -> str | None:
    """The special token that closes an assistant turn in the chat template (``<|im_end|>`` for ChatML,
    the eos token for alpaca), or None when the turn does not end with a special token.
    """
    markers = turn_markers(tokenizer)
    after = markers.wrap["assistant"][1] if markers else ""
    specials = sorted({*getattr(tokenizer, "all_special_tokens", []), *tokenizer.get_added_vocab()}, key=len,
                      reverse=True)
    return next((token for token in specials if token and after.startswith(token)), None)
