"""The train-to-serve contract of a model trained on reasoning traces: it pins a conversation with reasoning, so a
served template that renders reasoning otherwise (drops it, keeps it in past turns, thinks by another default)
is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ayar.data.templates import CHATML, set_template
from ayar.errors import UsageError
from ayar.models.load import load_tokenizer
from ayar.models.template_contract import build_contract, check_contract, write_contract

# Qwen3-style, its tool branches left out: reasoning from reasoning_content, written after the last user turn only.
THINKING = (
    "{%- set ns = namespace(last_query=-1) %}"
    "{%- for m in messages %}{%- if m.role == 'user' %}{%- set ns.last_query = loop.index0 %}{%- endif %}"
    "{%- endfor %}"
    "{%- for m in messages %}"
    "{%- if m.role == 'assistant' %}"
    "{%- set reasoning = m.reasoning_content if m.reasoning_content is string else '' %}"
    "{%- if loop.index0 > ns.last_query and (loop.last or reasoning) %}"
    "{{- '<|im_start|>assistant\\n<think>\\n' + reasoning + '\\n</think>\\n\\n' + m.content }}"
    "{%- else %}{{- '<|im_start|>assistant\\n' + m.content }}{%- endif %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- else %}{{- '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}{{- '<think>\\n\\n</think>\\n\\n' }}{%- endif %}"
    "{%- endif %}"
)


@pytest.fixture
def tokenizer(tiny_model_dir: Path) -> Any:
    tok = load_tokenizer(str(tiny_model_dir))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.add_tokens(["<think>", "</think>"])
    tok.chat_template = THINKING
    return tok


def reasoning_entry(contract: dict[str, Any]) -> dict[str, Any] | None:
    return next((e for e in contract["conversations"] if e["name"] == "reasoning"), None)


def test_a_reasoning_conversation_is_pinned_only_when_training_had_reasoning(tokenizer: Any) -> None:
    without = build_contract(tokenizer, tools_used=False)
    assert reasoning_entry(without) is None and "reasoning_used" not in without  # as contracts were before
    contract = build_contract(tokenizer, tools_used=False, reasoning_used=True)
    entry = reasoning_entry(contract)
    assert contract["reasoning_used"] is True and entry is not None
    assert entry["text"].endswith("<|im_start|>assistant\n<think>\n5 + 4 = 9.\n</think>\n\n9 elma.<|im_end|>\n")
    assert "3 + 2 = 5" not in entry["text"]  # this template drops a past turn's reasoning: pinned as such
    assert [c["name"] for c in contract["conversations"]][:-1] == [c["name"] for c in without["conversations"]]


def test_a_template_without_a_reasoning_field_pins_the_reasoning_inline(tokenizer: Any) -> None:
    tokenizer.chat_template = CHATML
    entry = reasoning_entry(build_contract(tokenizer, tools_used=False, reasoning_used=True))
    assert entry is not None and "<think>\n3 + 2 = 5; birimi koru.\n</think>\n\n5 elma." in entry["text"]


def serve_with(tokenizer: Any, template: str, tmp_path: Path) -> None:
    write_contract(tmp_path, tokenizer, tools_used=False, reasoning_used=True)
    tokenizer.chat_template = template


@pytest.mark.parametrize("served", [
    THINKING.replace("m.reasoning_content if m.reasoning_content is string else ''", "''"),  # reasoning unread
    THINKING.replace("loop.index0 > ns.last_query and ", ""),  # past turns keep their reasoning
])
def test_a_served_template_that_renders_reasoning_otherwise_is_refused(tokenizer: Any, tmp_path: Path,
                                                                     served: str) -> None:
    serve_with(tokenizer, tokenizer.chat_template, tmp_path)
    assert check_contract(tmp_path, tokenizer)  # unchanged: accepted
    tokenizer.chat_template = served
    with pytest.raises(UsageError, match="reference conversation 'reasoning' differs in its text"):
        check_contract(tmp_path, tokenizer)


def test_a_served_model_that_thinks_by_another_default_is_refused(tokenizer: Any, tmp_path: Path) -> None:
    set_template(tokenizer, THINKING, enable_thinking=False)
    serve_with(tokenizer, THINKING, tmp_path)  # served with the template's own default: thinking on
    with pytest.raises(UsageError, match="differs in its prompt text"):
        check_contract(tmp_path, tokenizer)
