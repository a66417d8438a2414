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
from reasoning_templates import QWEN3_STYLE


@pytest.fixture
def tokenizer(tiny_model_dir: Path) -> Any:
    tok = load_tokenizer(str(tiny_model_dir))
    tok.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tok.add_tokens(["<think>", "</think>"])
    tok.chat_template = QWEN3_STYLE
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
    QWEN3_STYLE.replace("{%- if m.reasoning_content is string %}", "{%- if false %}"),  # reasoning unread
    QWEN3_STYLE.replace("loop.index0 > ns.last_query and ", ""),  # past turns keep their reasoning
])
def test_a_served_template_that_renders_reasoning_otherwise_is_refused(tokenizer: Any, tmp_path: Path,
                                                                     served: str) -> None:
    assert served != QWEN3_STYLE  # the variant really differs
    serve_with(tokenizer, tokenizer.chat_template, tmp_path)
    assert check_contract(tmp_path, tokenizer)  # unchanged: accepted
    tokenizer.chat_template = served
    with pytest.raises(UsageError, match="reference conversation 'reasoning' differs in its text"):
        check_contract(tmp_path, tokenizer)


def test_a_served_model_that_thinks_by_another_default_is_refused(tokenizer: Any, tmp_path: Path) -> None:
    set_template(tokenizer, QWEN3_STYLE, enable_thinking=False)
    serve_with(tokenizer, QWEN3_STYLE, tmp_path)  # served with the template's own default: thinking on
    with pytest.raises(UsageError, match="differs in its prompt text"):
        check_contract(tmp_path, tokenizer)
