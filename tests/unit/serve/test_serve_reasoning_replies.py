"""A thinking model's answer comes back as reasoning_content apart from content, whole and streamed alike;
a model that does not think keeps its answer as written."""

from __future__ import annotations

import asyncio
import json
import threading
from types import SimpleNamespace
from typing import Any

from ayar.serve.jobs import Event
from ayar.serve.replies import Answer, Reply, stream

TOOLS = [{"type": "function", "function": {"name": "f", "parameters": {}}}]


class _Counter:
    def labels(self, *args: Any) -> _Counter:
        return self

    def inc(self, *args: Any) -> None:
        pass


def _streamed(chunks: list[str], tools: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The chat deltas a stream of these generated pieces sends, for a thinking model."""
    state = SimpleNamespace(metrics=SimpleNamespace(generated_tokens=_Counter(), cancelled=_Counter()))

    async def run() -> list[str]:
        events: asyncio.Queue = asyncio.Queue()
        for piece in chunks:
            events.put_nowait(Event("delta", piece))
        events.put_nowait(Event("done", "stop", 7))
        reply = Reply("m", True, 3)
        reply.reasoning_opened, reply.tools = False, tools
        return [s async for s in stream(SimpleNamespace(cancel=threading.Event()), events, reply, False, state, {})]

    return [json.loads(s[6:])["choices"][0]["delta"] for s in asyncio.run(run()) if s.startswith("data: {")]


def _joined(deltas: list[dict[str, Any]], key: str) -> str:
    return "".join(d.get(key) or "" for d in deltas)


def test_a_whole_answer_is_split_into_reasoning_and_content() -> None:
    reply = Reply("m", True, 3)
    reply.reasoning_opened = False
    message = reply.full([Answer("<think>\n3 + 2 = 5\n</think>\n\n5 elma.", "stop", 9)])["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "5 elma.", "reasoning_content": "3 + 2 = 5"}


def test_a_model_that_does_not_think_keeps_its_text() -> None:
    message = Reply("m", True, 3).full([Answer("<think>x</think>y", "stop", 3)])["choices"][0]["message"]
    assert message == {"role": "assistant", "content": "<think>x</think>y"}


def test_streamed_pieces_split_as_the_whole_answer_does_even_across_the_tags() -> None:
    deltas = _streamed(["<thi", "nk>\n3 + 2", " = 5\n</th", "ink>\n\n5", " elma."])
    assert (_joined(deltas, "reasoning_content"), _joined(deltas, "content")) == ("3 + 2 = 5", "5 elma.")
    assert not any("<" in d.get("content", "") for d in deltas)


def test_an_answer_cut_off_while_thinking_is_all_reasoning() -> None:
    deltas = _streamed(["<think>cut off"])
    assert (_joined(deltas, "reasoning_content"), _joined(deltas, "content")) == ("cut off", "")


def test_a_tool_call_after_the_reasoning_is_parsed_from_the_content() -> None:
    deltas = _streamed(["<think>call f</think>", '<tool_call>{"name": "f", "arguments": {}}</tool_call>'], TOOLS)
    assert _joined(deltas, "reasoning_content") == "call f"
    calls = [call for d in deltas for call in d.get("tool_calls") or []]
    assert [c["function"]["name"] for c in calls] == ["f"]
