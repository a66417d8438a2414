"""Held-out tool calls: right function name, valid JSON arguments, the reference's arguments."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from ayar.eval.tool_calls import tool_call_scores

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


def _call(city: str, name: str = "get_weather") -> dict:
    return {"role": "assistant", "content": "",
            "tool_calls": [{"type": "function", "function": {"name": name, "arguments": {"city": city}}}]}


def test_scores_name_json_and_arguments() -> None:
    outputs = ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Van"}}\n</tool_call>',
               '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Muş"}}\n</tool_call>',
               '<tool_call>\n{"name": "get_time", "arguments": {"city": "Van"}}\n</tool_call>',
               '<tool_call>\n{"name": "get_weather", "arguments": {city: Van}\n</tool_call>',
               "Selam."]
    references = [_call("Van"), _call("Van"), _call("Van"), _call("Van"), {"role": "assistant", "content": "Selam."}]
    summary, rows = tool_call_scores(outputs, references, [TOOLS] * 5)
    assert rows["tool_json"][:4] == [1.0, 1.0, 1.0, 0.0] and math.isnan(rows["tool_json"][4])
    assert rows["tool_name"][:4] == [1.0, 1.0, 0.0, 1.0]  # the name is read from a broken call too
    assert rows["tool_args"][:4] == [1.0, 0.0, 0.0, 0.0]
    assert summary == {"tool_json_accuracy": 0.75, "tool_name_accuracy": 0.75, "tool_args_accuracy": 0.25,
                       "tool_none_accuracy": 1.0, "tool_call_examples": 4, "tool_none_examples": 1}
    assert tool_call_scores(["a"], [{"role": "assistant", "content": "a"}], [None]) == ({}, {})


def test_tool_none_scores_direct_answers_where_no_tool_is_needed() -> None:
    """Tools offered, the reference answers in text: an answer that calls a tool (even a broken call) scores 0."""
    answer = {"role": "assistant", "content": "42"}
    outputs = ["42", '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Van"}}\n</tool_call>',
               "<tool_call>\n{broken\n</tool_call>", '{"name": "get_weather", "arguments": {}}', "42"]
    summary, rows = tool_call_scores(outputs, [answer] * 5, [TOOLS, TOOLS, TOOLS, TOOLS, None])
    assert rows["tool_none"][:4] == [1.0, 0.0, 0.0, 0.0] and math.isnan(rows["tool_none"][4])
    assert all(math.isnan(v) for v in rows["tool_name"])  # no reference calls a tool
    assert summary == {"tool_none_accuracy": 0.25, "tool_none_examples": 4}


def test_causal_lm_eval_renders_tools_and_scores_calls(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM

    import ayar.eval.tasks as tasks
    from ayar.data.load import check_shape
    from ayar.data.templates import render_prompt, set_template
    from ayar.models.load import load_tokenizer
    from ayar.recipe import load_recipe

    tok = load_tokenizer(str(tiny_model_dir))
    set_template(tok, "chatml_tools")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    records = [check_shape({"tools": TOOLS, "messages": [{"role": "user", "content": f"{c} hava?"}, _call(c)]},
                           "messages") for c in ("Van", "Muş")]
    seen: list[str] = []

    def fake_generate(model, tokenizer, conversations, cfg, tools=None):  # the model's answers, fixed
        seen.extend(render_prompt(tokenizer, c, t) for c, t in zip(conversations, tools, strict=True))
        return ['<tool_call>\n{"name": "get_weather", "arguments": {"city": "Van"}}\n</tool_call>'] * 2

    monkeypatch.setattr(tasks, "generate_chat", fake_generate)
    recipe = load_recipe(None, ["model.name_or_path=x", "data.format=messages", "data.max_length=1024"])
    result = tasks.evaluate_causal_lm(model, tok, records, ["a", "b"], recipe)
    assert all('"name": "get_weather"' in prompt and "<tools>" in prompt for prompt in seen)
    summary = result["summary"]
    assert (summary["tool_name_accuracy"], summary["tool_args_accuracy"], summary["tool_call_examples"]) == (1.0, 0.5, 2)
    assert [row["tool_args"] for row in result["rows"]] == [1.0, 0.0]
    assert json.dumps(summary)  # the summary stays JSON
