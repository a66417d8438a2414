"""bench/served_tool_calls.py: an API answer written back as the template writes it scores as `ayar eval` scores
the model's own text, and a reference conversation goes to the API in the client's shape."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import served_tool_calls

from ayar.data.templates import parse_tool_calls
from ayar.eval.tool_calls import tool_call_scores

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
REFERENCE = {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "İzmir"}}}]}


def api_message(content: str | None, calls: list[tuple[str, dict]]) -> SimpleNamespace:
    """An answer as the openai client returns it (arguments as JSON text)."""
    return SimpleNamespace(content=content, tool_calls=[
        SimpleNamespace(function=SimpleNamespace(name=name, arguments=json.dumps(args, ensure_ascii=False)))
        for name, args in calls])


def test_an_api_answer_scores_as_the_text_it_came_from() -> None:
    model_text = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "İzmir"}}\n</tool_call>'
    content, calls = parse_tool_calls(model_text, TOOLS)
    written = served_tool_calls.as_template_text(
        api_message(content, [(c["function"]["name"], c["function"]["arguments"]) for c in calls]))
    assert tool_call_scores([written], [REFERENCE], [TOOLS]) == tool_call_scores([model_text], [REFERENCE], [TOOLS])
    wrong = served_tool_calls.as_template_text(api_message(None, [("get_weather", {"city": "Ankara"})]))
    assert tool_call_scores([wrong], [REFERENCE], [TOOLS])[0]["tool_args_accuracy"] == 0.0
    text = served_tool_calls.as_template_text(api_message("Bilmiyorum.", []))
    assert text == "Bilmiyorum." and not parse_tool_calls(text, TOOLS)[1]


def test_a_reference_turn_goes_to_the_api_with_its_arguments_as_json_text() -> None:
    sent = served_tool_calls.for_the_api(REFERENCE)
    assert json.loads(sent["tool_calls"][0]["function"]["arguments"]) == {"city": "İzmir"}
    assert sent["tool_calls"][0]["id"] and sent["tool_calls"][0]["type"] == "function"
    assert "tool_calls" not in served_tool_calls.for_the_api({"role": "user", "content": "Merhaba"})
