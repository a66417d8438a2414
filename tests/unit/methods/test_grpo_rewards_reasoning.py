"""GRPO's rewards on completions with reasoning: the format reward can ask for a reasoning block, and the answer
reward checks the answer after it."""

from __future__ import annotations

import pytest

from ayar.methods.grpo_rewards import RewardSpec, reward_functions

COMPLETIONS = [
    "<think>20 + 11 = 31</think>\n<answer>31</answer>",
    "20 + 11 = 31</think><answer>31</answer>",  # the prompt opened the block
    "<answer>31</answer>",  # no reasoning
    "<think>  </think><answer>31</answer>",  # an empty block is no reasoning
    "<think>20 + 11 = 31</think> So: <answer>31</answer>",  # text around the tag
    "<think>20 + 11 = 31</think> 31",  # no tag
]


def test_the_format_reward_with_think_asks_for_a_reasoning_block_before_the_tagged_answer() -> None:
    think, plain = reward_functions([RewardSpec(name="format", think=True), RewardSpec(name="format")])[0]
    assert think(prompts=[""] * 6, completions=COMPLETIONS) == [1.0, 1.0, 0.5, 0.5, 0.5, 0.0]
    assert plain(prompts=[""] * 6, completions=COMPLETIONS) == [1.0, 0.5, 1.0, 1.0, 0.5, 0.0]  # as before
    assert think.__name__ == "format_think_answer" and plain.__name__ == "format_answer"


def test_the_answer_reward_checks_what_follows_the_reasoning() -> None:
    (answer,), _ = reward_functions([RewardSpec(name="answer")])
    completions = ["<think>20 + 11 is 30, no: 31</think>\n31", "<think>20 + 11 = 30</think> 30", "31", "30 then 31"]
    scores = answer(prompts=[""] * 4, completions=completions, task=["add"] * 4, input=["20 + 11"] * 4,
                    output=["31"] * 4)
    assert scores == pytest.approx([1.0, 0.0, 1.0, 0.0])  # the reasoning's own numbers never count
    (tagged,), _ = reward_functions([RewardSpec(name="answer")], answer_tag="answer")
    assert tagged(prompts=[""], completions=["<think>maybe <answer>30</answer></think><answer>31</answer>"],
                  task=["add"], input=["20 + 11"], output=["31"]) == [1.0]
