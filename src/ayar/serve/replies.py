"""OpenAI response objects of the completion routes: whole answers (one or several choices) and SSE chunks."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ayar.data.reasoning import split_reasoning
from ayar.serve.jobs import Job, TokenLogprobs
from ayar.serve.logprobs import chat_logprobs, legacy_logprobs
from ayar.serve.reasoning import ReasoningStream


@dataclass
class Answer:
    """One choice as the engine finished it."""

    text: str
    finish: str
    tokens: int  # completion tokens
    logprobs: TokenLogprobs | None = None
    prompt_text: str = ""  # completions: the prompt's text
    echo: bool = False  # completions: answer the prompt back before the completion


def tool_answer(text: str, tools: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, OpenAI tool_calls) of a generated answer; arguments go back as JSON text, as OpenAI sends them."""
    from ayar.data.templates import parse_tool_calls

    content, calls = parse_tool_calls(text, tools)
    out = [{"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
            "function": {"name": c["function"]["name"],
                         "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False)}} for c in calls]
    return (content or None) if out else content, out


class Reply:
    """Builds OpenAI response and chunk objects for one request."""

    def __init__(self, model: str, chat: bool, prompt_tokens: int, tokenizer: Any = None) -> None:
        self.model, self.chat, self.prompt_tokens, self.tokenizer = model, chat, prompt_tokens, tokenizer
        self.tools: list[dict[str, Any]] | None = None  # with tools, answers are parsed for tool calls
        # a thinking model's answers are split into reasoning_content and content: whether the prompt opened
        # the think block (None: not a thinking model, the answer is all content)
        self.reasoning_opened: bool | None = None
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def usage(self, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def full(self, answers: list[Answer]) -> dict[str, Any]:
        """The whole response: one choice per answer, in order."""
        choices = [self._chat_choice(i, a) if self.chat else self._text_choice(i, a) for i, a in enumerate(answers)]
        return {**self._envelope(self.object, choices), "usage": self.usage(sum(a.tokens for a in answers))}

    def _chat_choice(self, index: int, answer: Answer) -> dict[str, Any]:
        text = answer.text
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if self.reasoning_opened is not None:
            reasoning, text = split_reasoning(answer.text, self.reasoning_opened)
            message["content"] = text
            if reasoning is not None:
                message["reasoning_content"] = reasoning
        finish = answer.finish
        if self.tools:
            message["content"], calls = tool_answer(text, self.tools)
            if calls:
                message["tool_calls"], finish = calls, "tool_calls"
        logprobs = chat_logprobs(self.tokenizer, answer.logprobs.completion) if answer.logprobs else None
        return {"index": index, "message": message, "finish_reason": finish, "logprobs": logprobs}

    def _text_choice(self, index: int, answer: Answer) -> dict[str, Any]:
        logprobs = None
        if answer.logprobs:
            scored = answer.logprobs.prompt + answer.logprobs.completion
            # offsets count in the prompt and its completion, as OpenAI counts them, echoed or not
            logprobs = legacy_logprobs(self.tokenizer, scored, 0 if answer.echo else len(answer.prompt_text))
        text = (answer.prompt_text if answer.echo else "") + answer.text
        return {"index": index, "text": text, "finish_reason": answer.finish, "logprobs": logprobs}

    def chunk(self, text: str | None, finish: str | None = None, first: bool = False,
              reasoning: str | None = None) -> str:
        if self.chat:
            delta: dict[str, str] = {"role": "assistant", "content": ""} if first else {}
            if reasoning:
                delta["reasoning_content"] = reasoning
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return sse(self._envelope("chat.completion.chunk", [choice]))
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return sse(self._envelope("text_completion", [choice]))

    def tool_chunk(self, content: str | None, calls: list[dict[str, Any]]) -> str:
        """One chunk with a parsed answer: its text and its tool calls (each with its index, as OpenAI streams)."""
        delta: dict[str, Any] = {"content": content}
        if calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        choice = {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
        return sse(self._envelope("chat.completion.chunk", [choice]))

    def usage_chunk(self, completion_tokens: int) -> str:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return sse({**self._envelope(obj, []), "usage": self.usage(completion_tokens)})


def sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream(job: Job, events: asyncio.Queue, reply: Reply, include_usage: bool, state: Any,
                 log_info: dict[str, Any]) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.

    When the client leaves, Starlette stops this generator; ``finally`` then cancels the job, which
    stops ``generate`` at its next token.
    """
    finished = False
    held: list[str] | None = [] if reply.tools else None  # with tools, the answer is parsed whole at the end
    thinking = ReasoningStream(reply.reasoning_opened) if reply.chat and reply.reasoning_opened is not None \
        else None
    try:
        if reply.chat:
            yield reply.chunk(None, first=True)
        while True:
            event = await events.get()
            if event.kind == "delta":
                log_info["completion"] = log_info.get("completion", "") + event.value
                thought, said = thinking.feed(event.value) if thinking else ("", event.value)
                if thought:
                    yield reply.chunk(None, reasoning=thought)
                if held is not None:
                    held.append(said)
                elif said or thinking is None:  # without reasoning parsing, every delta as before
                    yield reply.chunk(said)
                continue
            if event.kind == "error" or event.value == "timeout":
                message = event.value if event.kind == "error" else "generation passed the request timeout"
                yield sse({"error": {"message": message, "type": "server_error", "param": None,
                                     "code": "generation_failed" if event.kind == "error" else "timeout"}})
                break
            log_info["completion_tokens"] = event.tokens
            state.metrics.generated_tokens.labels(reply.model).inc(event.tokens)
            finish = event.value
            thought, said = thinking.finish() if thinking else ("", "")
            if thought or (said and held is None):
                yield reply.chunk(said if held is None else None, reasoning=thought)
            if held is not None:
                held.append(said)
                content, calls = tool_answer("".join(held), reply.tools or [])
                yield reply.tool_chunk(content, calls)
                finish = "tool_calls" if calls else finish
            yield reply.chunk(None, finish=finish)
            if include_usage:
                yield reply.usage_chunk(event.tokens)
            break
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            job.cancel.set()
            state.metrics.cancelled.inc()
