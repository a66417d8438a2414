"""GRPO's rewards: the checkers through TRL's reward-function shape, format and length, and user functions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.grpo_rewards import RewardSpec, import_user_reward, reward_functions
from ayar.train.grpo import grpo_row


def test_the_answer_reward_grades_each_completion_with_its_tasks_checker() -> None:
    (answer,), weights = reward_functions([RewardSpec(name="answer", weight=2.0)])
    completions = ["March 15, 2024", "March 16, 2024", "kitapda", "31"]
    columns = {"task": ["date", "date", "locative", "add"], "input": ["2024-03-15", "2024-03-15", "kitap", "20 + 11"],
               "output": ["March 15, 2024", "March 15, 2024", "kitapta", "31"],
               "trainer_state": object(), "completion_ids": [[1]] * 4}
    scores = answer(prompts=["p"] * 4, completions=completions, **columns)
    assert scores == pytest.approx([1.0, 2 / 3, 0.25, 1.0], abs=1e-3) and weights == [2.0]


def test_the_answer_reward_grades_tool_call_arguments() -> None:
    reference = {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "convert_currency",
                                          "arguments": json.dumps({"amount": 5, "from_currency": "USD",
                                                                   "to_currency": "EUR"})}}]}
    good = '<tool_call>{"name": "convert_currency", "arguments": {"amount": 5, "from_currency": "USD", ' \
           '"to_currency": "EUR"}}</tool_call>'
    (answer,), _ = reward_functions([RewardSpec(name="answer")])
    columns = {"task": ["convert_currency"] * 2, "reference": [json.dumps(reference)] * 2, "tools": [""] * 2}
    assert answer(prompts=["p", "p"], completions=[good, good.replace('"amount": 5', '"amount": 6')],
                  **columns) == pytest.approx([1.0, 2 / 3])


def test_an_answer_tag_is_read_and_the_format_and_length_rewards_score_the_shape() -> None:
    answer, format_, length = reward_functions([RewardSpec(name="answer"), RewardSpec(name="format"),
                                                RewardSpec(name="length", max_chars=20)], answer_tag="answer")[0]
    completions = ["<answer>31</answer>", "31", "I think <answer>31</answer> is it, and more words"]
    columns = {"task": ["add"] * 3, "output": ["31"] * 3}
    assert answer(prompts=[""] * 3, completions=completions, **columns) == [1.0, 0.0, 1.0]
    assert format_(prompts=[""] * 3, completions=completions) == [1.0, 0.0, 0.5]
    assert length(prompts=[""] * 3, completions=completions) == pytest.approx([1.0, 1.0, 20 / 49])


def test_a_user_reward_is_imported_by_dotted_path_and_gets_the_record_fields(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_rewards.py").write_text(
        "def score(prompts, completions, **fields):\n"
        "    return [float(c == o) + len(fields) for c, o in zip(completions, fields['output'])]\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for path in ("my_rewards:score", "my_rewards.score"):
        score = import_user_reward(path)
        assert score(prompts=["a", "b"], completions=["1", "2"], output=["1", "3"], trainer_state=None,
                     log_metric=print) == [2.0, 1.0]  # one record field; the trainer's own keywords held back


@pytest.mark.parametrize(("path", "message"), [
    ("no_such_module_here:score", "cannot import module 'no_such_module_here'"),
    ("json:no_such_function", "has no function 'no_such_function'"),
    ("score", "must be 'module:function'"),
])
def test_a_bad_reward_path_is_a_clear_usage_error(path: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        import_user_reward(path)


def test_grpo_params_are_checked() -> None:
    method = build_method("grpo", {"num_generations": 2, "loss_type": "dr_grpo", "beta": 0.04,
                                   "rewards": [{"name": "answer"}, {"name": "format", "weight": 0.2}]})
    assert method.trl_config_kwargs()["reward_weights"] == [1.0, 0.2]
    assert method.trl_config_kwargs()["loss_type"] == "dr_grpo"
    for bad in ({"loss_type": "ppo"}, {"num_generations": 1}, {"rewards": [{"name": "answer", "function": "m:f"}]},
                {"rewards": []}, {"base": "full", "base_params": {"r": 4}}):
        with pytest.raises(UsageError):
            build_method("grpo", bad)


class _Template:
    def apply_chat_template(self, messages, tools=None, tokenize=False, add_generation_prompt=True) -> str:
        return "|".join(m["content"] for m in messages) + (f"|tools={len(tools)}" if tools else "") + "|A:"


def test_a_row_holds_the_prompt_up_to_the_answer_and_what_the_checkers_read() -> None:
    row = grpo_row({"task": "add", "instruction": "Add.", "input": "1 + 2", "output": "3"}, _Template(), "Be brief.")
    assert row["prompt"] == "Be brief.|Add.\n\n### Input:\n1 + 2|A:" and row["output"] == "3" and row["task"] == "add"
    tools = [{"type": "function", "function": {"name": "get_local_time", "parameters": {}}}]
    call = {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_local_time", "arguments": '{"city": "Oslo"}'}}]}
    row = grpo_row({"task": "get_local_time", "tools": tools,
                    "messages": [{"role": "user", "content": "Time in Oslo?"}, call]}, _Template())
    assert row["prompt"] == "Time in Oslo?|tools=1|A:"
    assert json.loads(row["reference"])["tool_calls"][0]["function"]["name"] == "get_local_time"
