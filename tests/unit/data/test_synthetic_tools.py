"""The seeded tool-calling generator: deterministic, every function in both languages, arguments read off the
request, and through prepare with the accounting identity and every function in the held-out split."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from ayar.data.load import check_shape
from ayar.data.prepare import prepare
from ayar.data.synthetic_tools import ALL_TOOL_TASKS, NO_TOOL, TOOL_TASKS, generate_tool_records
from ayar.errors import UsageError
from ayar.recipe import DataConfig, SyntheticConfig, load_recipe

ROOT = Path(__file__).resolve().parents[3]


def test_seeded_distinct_and_every_function_in_both_languages() -> None:
    records = list(generate_tool_records(600, 3, ["tr", "en"], list(ALL_TOOL_TASKS), tool_results=0.3))
    assert records == list(generate_tool_records(600, 3, ["tr", "en"], list(ALL_TOOL_TASKS), tool_results=0.3))
    assert records != list(generate_tool_records(600, 4, ["tr", "en"], list(ALL_TOOL_TASKS), tool_results=0.3))
    assert len({json.dumps(r["messages"][0]) for r in records}) == 600  # no request twice
    assert {(r["task"], r["lang"]) for r in records} == {(t, lang) for t in ALL_TOOL_TASKS for lang in ("tr", "en")}
    with_result = [r for r in records if len(r["messages"]) == 4]
    assert 0.15 < len(with_result) / sum(r["task"] != NO_TOOL for r in records) < 0.45


def _found_in(value: object, text: str) -> bool:
    """A string argument appears in the text as is; a number appears as one of the text's numbers."""
    if isinstance(value, float | int):
        return float(value) in {float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", text)}
    return str(value) in text


def test_calls_are_valid_openai_records_with_arguments_from_the_request() -> None:
    for record in generate_tool_records(300, 0, ["tr", "en"], list(ALL_TOOL_TASKS)):
        offered = [t["function"]["name"] for t in record["tools"]]
        messages = check_shape(json.loads(json.dumps(record)), "messages")["messages"]  # the loader reads it
        ask, answer = messages[0]["content"], messages[1]
        assert len(set(offered)) == len(offered) and 1 <= len(offered) <= 2
        if record["task"] == NO_TOOL:
            assert "tool_calls" not in answer and answer["content"]
            continue
        (call,) = answer["tool_calls"]
        assert call["function"]["name"] == record["task"] in offered
        for key, value in call["function"]["arguments"].items():  # every argument can be read off the request
            assert _found_in(value if key != "unit" else "Fahrenheit", ask), (key, value, ask)
        if len(messages) == 4:  # the tool's output, then a final answer that quotes its figures
            result = json.loads(messages[2]["content"])
            assert messages[2]["role"] == "tool" and messages[3]["role"] == "assistant"
            figure = result.get("result", result.get("temperature", result.get("time")))
            assert _found_in(figure, messages[3]["content"]), (result, messages[3])


def test_unknown_or_mixed_tasks_and_the_wrong_format_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown tool-calling task"):
        list(generate_tool_records(10, 0, ["en"], ["get_weather", "book_flight"]))
    for tasks, fmt, message in ((["get_weather", "add"], "messages", "mixes tool-calling tasks"),
                                (["get_weather"], "alpaca", "set data.format: messages")):
        cfg = DataConfig(synthetic=SyntheticConfig(num_records=20, tasks=tasks), format=fmt, save_arrow=False)
        with pytest.raises(UsageError, match=message):
            prepare(cfg, tmp_path / fmt, seed=0)


def test_recipe_data_keeps_every_function_in_the_test_split(tmp_path: Path) -> None:
    """The tool-calling recipe's data through prepare: records in = kept + removed + rejected, dedup keeps most
    of every task, and the held-out split has every function (and the no-tool requests) in both languages."""
    data = load_recipe(ROOT / "recipes/tool-calling.yaml").data
    assert set(data.synthetic.tasks) == set(ALL_TOOL_TASKS)
    prepared = prepare(data.model_copy(update={"save_arrow": False}), tmp_path / "out", seed=42)
    card = prepared.card
    assert card["records_in"] == data.synthetic.num_records == card["kept"] + card["removed_total"] + card["rejected"]
    assert card["rejected"] == 0
    kept = Counter(r["task"] for split in ("train", "validation", "test") for r in prepared.read_split(split))
    generated = Counter(r["task"] for r in generate_tool_records(data.synthetic.num_records, 42,
                                                                 data.synthetic.languages, data.synthetic.tasks,
                                                                 data.synthetic.tool_results))
    test = prepared.read_split("test")
    calls = Counter((r["task"], r["lang"]) for r in test if r["messages"][-1].get("tool_calls"))
    for task in TOOL_TASKS:
        assert kept[task] >= 0.9 * generated[task], (task, kept, generated)
        assert calls[task, "tr"] >= 3 and calls[task, "en"] >= 3, calls
    assert sum(r["task"] == NO_TOOL for r in test) >= 10
    train = {json.dumps(r["messages"][0]) for r in prepared.read_split("train")}
    assert not train.intersection(json.dumps(r["messages"][0]) for r in test)
