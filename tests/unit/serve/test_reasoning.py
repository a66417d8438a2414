"""Generated answers split into reasoning_content and content, whole and streamed alike."""

from __future__ import annotations

import itertools

import pytest

from ayar.data.reasoning import prompt_opens_reasoning, split_reasoning
from ayar.serve.reasoning import ReasoningStream, template_thinks

CASES = [  # (generated text, prompt opened the block, reasoning, content)
    ("<think>\n3 + 2 = 5\n</think>\n\n5 elma.", False, "3 + 2 = 5", "5 elma."),
    ("  <think>a</think>b", False, "a", "b"),
    ("<think>\n\n</think>\n\nHemen: 5.", False, None, "Hemen: 5."),  # an empty block is no reasoning
    ("5 elma.", False, None, "5 elma."),
    ("  5 <think>x</think> y", False, None, "  5 <think>x</think> y"),  # a block later on is content
    ("<thin", False, None, "<thin"),
    ("<think>still thinking when cut", False, "still thinking when cut", ""),
    ("3 + 2 = 5\n</think>\n\n5 elma.", True, "3 + 2 = 5", "5 elma."),  # the template opened the block
    ("no end", True, "no end", ""),
    ("<think>a</think>b</think>c", False, "a", "b</think>c"),
    ("<think> a \n b </think>  \n", False, "a \n b", ""),
    ("", False, None, ""),
]


@pytest.mark.parametrize(("text", "opened", "reasoning", "content"), CASES)
def test_an_answer_is_split_into_reasoning_and_content(text: str, opened: bool, reasoning: str | None,
                                                       content: str) -> None:
    assert split_reasoning(text, opened) == (reasoning, content)


def streamed(chunks: list[str], opened: bool) -> tuple[str, str]:
    stream = ReasoningStream(opened)
    parts = [stream.feed(chunk) for chunk in chunks] + [stream.finish()]
    return "".join(r for r, _ in parts), "".join(c for _, c in parts)


@pytest.mark.parametrize(("text", "opened", "reasoning", "content"), CASES)
def test_every_way_of_cutting_the_stream_joins_to_the_whole_answers_split(text: str, opened: bool,
                                                                            reasoning: str | None,
                                                                            content: str) -> None:
    expected = (reasoning or "", content)
    assert streamed(list(text), opened) == expected  # a character at a time
    for cuts in itertools.combinations(range(1, len(text)), min(2, max(len(text) - 1, 0))):
        bounds = [0, *cuts, len(text)]
        assert streamed([text[a:b] for a, b in itertools.pairwise(bounds)], opened) == expected, cuts


def test_a_stream_sends_reasoning_before_the_answer_ends_and_holds_only_a_possible_tag() -> None:
    stream = ReasoningStream()
    sent = [stream.feed(c) for c in ["<thi", "nk>\nFirst", " step.", " </th", "ink>\n\n", "5", " elma."]]
    # "<thi" may open the block and " </th" may close it: held until the next chunk decides
    assert sent == [("", ""), ("First", ""), (" step.", ""), ("", ""), ("", ""), ("", "5"), ("", " elma.")]
    assert stream.finish() == ("", "")


def test_which_models_are_parsed_and_whether_the_prompt_opened_the_block() -> None:
    assert template_thinks("...{{ '<think>\\n' + r + '\\n</think>\\n\\n' }}...")
    assert not template_thinks("{{ '<|im_start|>' + m.role }}") and not template_thinks(None)
    assert template_thinks("{{ '<|im_start|>' + m.role }}", reasoning_trained=True)  # trained on inline blocks
    assert prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
