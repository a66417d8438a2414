"""Chat templates: the one place where records become prompt text.

The template used in training is set on the tokenizer and saved with every model and adapter,
so generation and serving format prompts exactly as training did.
"""

from __future__ import annotations

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
