"""Chat templates: the one place where records become prompt text.

The template used in training is set on the tokenizer and saved with every model and adapter,
so generation and serving format prompts exactly as training did.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from ayar.data.chat import normalize_messages, normalize_tools, sharegpt_messages
from ayar.data.reasoning import (
    REASONING_KEY,
    ReasoningMode,
    as_inline,
    has_reasoning,
    with_reasoning,
    without_reasoning,
)
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
# ChatML with tool calling in the Hermes/Qwen2.5 convention: the function schemas in the system turn,
# each call as <tool_call>{"name": ..., "arguments": {...}}</tool_call>, each tool output in a tool turn.
# For models whose own template has no tool support; ayar serve parses <tool_call> blocks back into tool_calls.
CHATML_TOOLS = (
    "{% set first = 0 %}"
    "{% if tools %}{{ '<|im_start|>system\n' }}"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\n\n' }}"
    "{% set first = 1 %}{% endif %}"
    "{{ '# Tools\n\nYou may call one or more functions. Function signatures are within <tools></tools>:\n<tools>' }}"
    "{% for tool in tools %}{{ '\n' }}{{ tool | tojson }}{% endfor %}"
    "{{ '\n</tools>\n\nFor each call, return a JSON object with the function name and arguments within '"
    " + '<tool_call></tool_call> tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
    "<args-json-object>}\n</tool_call><|im_end|>\n' }}"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if loop.index0 >= first %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['role'] == 'tool' %}{{ '<tool_response>\n' + message['content'] + '\n</tool_response>' }}"
    "{% else %}{{ message['content'] or '' }}{% endif %}"
    "{% if message['role'] == 'assistant' and message['tool_calls'] %}"
    "{% for call in message['tool_calls'] %}"
    "{% if message['content'] or not loop.first %}{{ '\n' }}{% endif %}"
    "{{ '<tool_call>\n{\"name\": ' }}{{ call['function']['name'] | tojson }}"
    "{{ ', \"arguments\": ' }}{{ call['function']['arguments'] | tojson }}{{ '}\n</tool_call>' }}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
NAMED_TEMPLATES = {"alpaca": ALPACA, "chatml": CHATML, "chatml_tools": CHATML_TOOLS}


def resolve_template(tokenizer: Any, name: str) -> str:
    """The chat template to train with: 'auto' keeps the tokenizer's own, else falls back to alpaca."""
    if name == "auto":
        return tokenizer.chat_template or ALPACA
    if name in NAMED_TEMPLATES:
        return NAMED_TEMPLATES[name]
    if "{%" in name or "{{" in name:  # an inline Jinja template
        return name
    raise UsageError(f"data.template '{name}' is not 'auto', {', '.join(NAMED_TEMPLATES)} or a Jinja template")


def template_renders_tools(text: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> str | None:
    """What a rendered conversation lost (a tool schema, a call, a tool output), or None when it shows them all.

    Templates without tool support drop these silently; training on such text would teach nothing about tools.
    """
    for tool in tools or ():
        if tool["function"]["name"] not in text:
            return f"the tool schema '{tool['function']['name']}'"
    for message in messages:
        for call in message.get("tool_calls") or ():
            if call["function"]["name"] not in text:
                return f"the tool call '{call['function']['name']}'"
        content = message["content"]
        # some templates (Llama 3.1) write a tool output through tojson: look for that form too
        if message["role"] == "tool" and content and content not in text and \
                json.dumps(content, ensure_ascii=False) not in text:
            return "a tool output"
    return None


# Prepended to a template to give ``enable_thinking`` a default that a caller's own value still overrides
# (Jinja's ``if`` opens no scope, so the ``set`` holds for the whole template).
_THINKING_DEFAULT = "{%- if enable_thinking is not defined %}{%- set enable_thinking = VALUE %}{%- endif %}"
_THINKING_DEFAULT_FOUND = re.compile(re.escape(_THINKING_DEFAULT).replace("VALUE", "(?:true|false)"))


def with_thinking_default(template: str, enable_thinking: bool | None) -> str:
    """The template with ``enable_thinking`` defaulting to the given value (unchanged for None).

    Written into the template rather than passed per call so that everything that renders the saved
    tokenizer (evaluation, GRPO prompts, serve, export, llama.cpp) thinks, or not, as training did.
    """
    if enable_thinking is None:
        return template
    template = _THINKING_DEFAULT_FOUND.sub("", template, count=1)
    if "enable_thinking" not in template:
        raise UsageError("data.enable_thinking is set but the chat template never reads enable_thinking; "
                         "leave it unset, or use a template that switches thinking (Qwen3's)")
    return _THINKING_DEFAULT.replace("VALUE", "true" if enable_thinking else "false") + template


def set_template(tokenizer: Any, name: str, enable_thinking: bool | None = None) -> None:
    """Set the resolved chat template on the tokenizer, so it is saved with it (with ``enable_thinking``'s
    default when it is set)."""
    tokenizer.chat_template = with_thinking_default(resolve_template(tokenizer, name), enable_thinking)


def apply_thinking_default(tokenizer: Any, enable_thinking: bool | None) -> None:
    """Give the tokenizer's chat template ``enable_thinking``'s default (nothing for None); may be repeated."""
    if enable_thinking is not None and tokenizer.chat_template:
        tokenizer.chat_template = with_thinking_default(tokenizer.chat_template, enable_thinking)


def alpaca_user_message(instruction: str, input_text: str | None) -> str:
    """The user turn of an alpaca record: the instruction, then its input if any."""
    if input_text:
        return f"{instruction}\n\n### Input:\n{input_text}"
    return instruction


def _message(m: dict[str, Any], turn: dict[str, Any] | None = None) -> dict[str, Any]:
    """A prepared message with the keys chat templates and the loss mask read (role, content, tool fields, train,
    reasoning from ``turn``, the message as the record holds it, or from a think block leading the content)."""
    out = {"role": m["role"], "content": m.get("content") or ""}
    for key in ("tool_calls", "tool_call_id", "name", "train"):
        if m.get(key) is not None:
            out[key] = m[key]
    with_reasoning(out, turn)
    return out


def record_to_messages(record: dict[str, Any], system_prompt: str | None = None) -> list[dict[str, Any]]:
    """Turn an alpaca, messages or sharegpt record (tool turns and reasoning included) into chat messages."""
    if "messages" in record:
        messages = [_message(m, turn) for m, turn in zip(normalize_messages(record["messages"]), record["messages"],
                                                         strict=True)]
    elif "conversations" in record:
        messages = [_message(m) for m in sharegpt_messages(record)]
    else:
        messages = [
            {"role": "user", "content": alpaca_user_message(record["instruction"], record.get("input"))},
            _message({"role": "assistant", "content": record["output"]}),
        ]
    if system_prompt and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system_prompt})
    return messages


def record_tools(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The function schemas a record offers the model (its ``tools`` column), or None."""
    return normalize_tools(record.get("tools"))


_REASONING_PROBE = "\x01R\x01"
_STYLES: dict[str, str | None] = {}  # chat template -> its reasoning style: found once, asked per record


def reasoning_style(tokenizer: Any) -> str | None:
    """How the chat template shows an assistant's reasoning: ``field`` (it reads ``reasoning_content``, as
    Qwen3's does), ``inline`` (it renders a think block written in the content), or None (it drops both, as
    DeepSeek-R1's drops past reasoning)."""
    template = tokenizer.chat_template or ""
    if template not in _STYLES:
        _STYLES[template] = _probe_reasoning_style(tokenizer)
    return _STYLES[template]


def _probe_reasoning_style(tokenizer: Any) -> str | None:
    user = {"role": "user", "content": "\x01U\x01"}
    field = {"role": "assistant", "content": "\x01A\x01", REASONING_KEY: _REASONING_PROBE}
    if _REASONING_PROBE in render_conversation(tokenizer, [user, field]):
        return "field"
    if _REASONING_PROBE in render_conversation(tokenizer, [user, as_inline(field)]):
        return "inline"
    return None


def messages_for_template(tokenizer: Any, messages: list[dict[str, Any]],
                          mode: ReasoningMode) -> list[dict[str, Any]]:
    """Messages in the internal form as the chat template must get them to render their reasoning (``drop``:
    without it). A template without a reasoning field gets the think block inline, so the model still learns
    to think; one that drops reasoning altogether is refused rather than silently training without it."""
    if not has_reasoning(messages):
        return messages
    if mode == "drop":
        return [without_reasoning(m) for m in messages]
    style = reasoning_style(tokenizer)
    if style is None:
        raise UsageError("the chat template drops the reasoning of assistant turns: set data.reasoning: drop to "
                         "train without it, or data.template to a template that renders it (Qwen3's, chatml)")
    return messages if style == "field" else [as_inline(m) for m in messages]


def render_prompt(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
    """The prompt text for generation: every message so far plus the assistant's header."""
    return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False, add_generation_prompt=True)


def render_conversation(tokenizer: Any, messages: list[dict[str, Any]],
                        tools: list[dict[str, Any]] | None = None) -> str:
    """The whole conversation as the template renders it for training (no generation header)."""
    return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False)


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


_TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*(?:</tool_call>|$)", re.S)


def _as_call(value: Any) -> dict[str, Any] | None:
    """``{"name", "arguments"|"parameters"}`` as an internal tool call, or None when it is not one."""
    if not isinstance(value, dict) or not isinstance(value.get("name"), str) or not value["name"]:
        return None
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"type": "function", "function": {"name": value["name"], "arguments": arguments}}


def parse_tool_calls(text: str, tools: list[dict[str, Any]] | None = None) -> tuple[str, list[dict[str, Any]]]:
    """(content, tool calls) of a generated answer, read in the formats chat templates teach.

    ``<tool_call>{json}</tool_call>`` blocks (Hermes, Qwen2.5, SmolLM3 and ayar's chatml_tools), or a
    whole answer that is a JSON call or list of calls (Llama 3.1 style; ``[TOOL_CALLS]`` prefix of
    Mistral) naming one of ``tools``. A block that is not valid JSON stays in the content.
    Hand-written: transformers' ``parse_response`` needs a ``response_template`` few tokenizers ship.
    """
    calls: list[dict[str, Any]] = []
    if "<tool_call>" in text:
        kept: list[str] = []
        position = 0
        for match in _TOOL_CALL_BLOCK.finditer(text):
            try:
                call = _as_call(json.loads(match.group(1)))
            except json.JSONDecodeError:
                call = None
            if call is None:
                continue
            kept.append(text[position:match.start()])
            position = match.end()
            calls.append(call)
        kept.append(text[position:])
        return ("".join(kept).strip() if calls else text), calls
    names = {t["function"]["name"] for t in tools or ()}
    body = text.strip().removeprefix("[TOOL_CALLS]").strip()
    if names and body[:1] in "[{":
        try:
            value = json.loads(body)
        except json.JSONDecodeError:
            return text, []
        found = [_as_call(v) for v in (value if isinstance(value, list) else [value])]
        if found and all(c is not None and c["function"]["name"] in names for c in found):
            return "", found  # type: ignore[return-value]
    return text, []
