"""Every generated task has an answer checker, and the checkers grade exact, normalised and partial answers."""

from __future__ import annotations

import json
import random

import pytest

from ayar.data.checkers import CHECKERS, check, normalise
from ayar.data.synthetic import TASKS, generate_records
from ayar.data.synthetic_tools import ALL_TOOL_TASKS, generate_tool_records


def test_every_generated_task_has_a_checker() -> None:
    assert set(CHECKERS) == set(TASKS) | set(ALL_TOOL_TASKS)


@pytest.mark.parametrize("task", sorted(set(TASKS) - {"topic"}))
def test_each_tasks_own_answer_scores_one_and_another_records_less(task: str) -> None:
    records = list(generate_records(40, seed=3, languages=["tr", "en"], tasks=[task]))
    for record, other in zip(records, records[1:], strict=False):
        assert check(task, record["output"], record) == 1.0
        assert check(task, f"  {record['output']}.\n\nmore text", record) == 1.0  # first line, full stop
        if other["output"] != record["output"]:
            assert check(task, other["output"], record) < 1.0


def test_normalising_follows_turkish_case() -> None:
    assert normalise(" İSTANBUL. ") == "istanbul" and normalise("IŞIK") == "ışık"
    record = {"task": "reverse", "input": "kitap", "output": "patik"}
    assert check("reverse", "PATİK", record) == 1.0


def test_partial_credit_for_a_date_with_the_right_month_and_a_wrong_day() -> None:
    record = {"task": "date", "input": "2024-03-15", "output": "March 15, 2024"}
    assert check("date", "March 15, 2024", record) == 1.0
    assert check("date", "March 16, 2024", record) == pytest.approx(2 / 3, abs=1e-3)
    assert check("date", "April 16, 2024", record) == pytest.approx(1 / 3, abs=1e-3)
    assert check("date", "15 Mart 2024", {**record, "output": "15 Mart 2024"}) == 1.0
    assert check("date", "16 Mart 2024", {**record, "output": "15 Mart 2024"}) == pytest.approx(2 / 3, abs=1e-3)


def test_a_dates_month_counts_only_in_the_references_language_and_only_the_exact_text_scores_1() -> None:
    turkish = {"task": "date", "input": "1999-05-14", "output": "14 Mayıs 1999"}
    assert check("date", "14 May 1999", turkish) == pytest.approx(2 / 3, abs=1e-3)  # English month: wrong
    assert check("date", "14 Haziran 1999", turkish) == pytest.approx(2 / 3, abs=1e-3)
    assert check("date", "Mayıs 14, 1999", turkish) == pytest.approx(5 / 6, abs=1e-3)  # every part, not the text
    english = {"task": "date", "input": "1999-05-14", "output": "May 14, 1999"}
    assert check("date", "14 Mayıs 1999", english) == pytest.approx(2 / 3, abs=1e-3)
    assert check("date", "14 May 1999", english) == pytest.approx(5 / 6, abs=1e-3)


def test_partial_credit_for_a_suffix_and_number_words() -> None:
    record = {"task": "locative", "input": "kitap", "output": "kitapta"}
    assert check("locative", "kitapda", record) == pytest.approx(0.25)  # stem right, one suffix letter of two
    assert check("locative", "kalemde", record) == 0.0
    words = {"task": "number_words", "input": "347", "output": "three hundred forty-seven"}
    assert 0 < check("number_words", "three hundred forty-six", words) < 0.5
    assert check("add", "The sum is 12.", {"task": "add", "output": "12"}) == 1.0


def _call(name: str, arguments: dict) -> str:
    return f'<tool_call>{json.dumps({"name": name, "arguments": arguments})}</tool_call>'


def test_tool_calls_score_parse_function_and_exact_arguments() -> None:
    record = next(generate_tool_records(1, seed=0, languages=["en"], tasks=["get_weather"]))
    want = json.loads(record["messages"][1]["tool_calls"][0]["function"]["arguments"])
    assert check("get_weather", _call("get_weather", want), record) == 1.0
    assert check("get_weather", _call("get_weather", {**want, "city": "Nowhere"}), record) == pytest.approx(2 / 3)
    assert check("get_weather", _call("get_local_time", want), record) == pytest.approx(1 / 3)
    assert check("get_weather", "<tool_call>{broken</tool_call>", record) == 0.0
    assert check("get_weather", "It is sunny.", record) == 0.0


def test_a_request_no_tool_serves_rewards_answering_without_a_call() -> None:
    rng = random.Random(0)
    record = next(r for r in generate_tool_records(20, seed=rng.randint(0, 9), languages=["en"], tasks=["no_tool"]))
    answer = record["messages"][1]["content"]
    assert check("no_tool", answer, record) == 1.0
    assert check("no_tool", "something else", record) == 0.5
    assert check("no_tool", _call("get_weather", {"city": "Oslo"}), record) == 0.0
