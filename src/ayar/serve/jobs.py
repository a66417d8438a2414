"""What travels between the HTTP API and an engine: a job, its sampling settings and the events it hears.

A :class:`Job` carries one request's prompt ids and :class:`SamplingParams` to an engine's worker thread; the
worker answers through the job's ``emit`` with :class:`Event` values. :class:`TokenStreamer` turns one job's
generated tokens into those events, holding back text a stop string could still claim.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple


class Event(NamedTuple):
    """What a job hears from an engine: ``Event("delta", text)``, ``Event("done", finish_reason, completion_tokens)``
    or ``Event("error", message)``."""

    kind: Literal["delta", "done", "error"]
    value: str  # the new text, the finish reason (stop, length, cancelled, timeout) or the error message
    tokens: int = 0  # completion tokens, on "done"
    logprobs: TokenLogprobs | None = None  # on "done", when the job asked for them


@dataclass
class TokenLogprob:
    """One token of an answer or prompt: its id, log-probability (None for a prompt's first token, which
    nothing predicts) and the most likely tokens at its position as (id, log-probability), best first."""

    token: int
    logprob: float | None
    top: list[tuple[int, float]] = field(default_factory=list)


@dataclass
class TokenLogprobs:
    """The scored tokens of one job: the prompt's (when it asked for them) and the generated ones."""

    prompt: list[TokenLogprob]
    completion: list[TokenLogprob]


class QueueFullError(Exception):
    """The job queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"server busy: the request queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


SAMPLING_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
"""OpenAI's defaults, for what neither the request nor the model's generation_config.json sets."""


@dataclass
class SamplingParams:
    """Decoding settings of one request (temperature 0 means greedy); None: the model's default."""

    max_tokens: int
    temperature: float | None = None
    top_p: float | None = None
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    min_tokens: int = 0
    top_k: int | None = None
    repetition_penalty: float | None = None
    logprobs: int | None = None  # score the tokens, with this many alternatives each (None: no scores)
    score_prompt: bool = False  # with logprobs: the prompt's tokens too
    constraint: Any = None  # a grammar the engine compiled (QueuedEngine.compile_constraint); None: free text


def sampling_defaults(model: Any) -> dict[str, float]:
    """Sampling settings for requests that omit them: the model's generation_config.json where it sets
    them (as vLLM does: its authors tuned them), else OpenAI's defaults."""
    config = getattr(model, "generation_config", None)
    return {name: value if (value := getattr(config, name, None)) is not None else default
            for name, default in SAMPLING_DEFAULTS.items()}


@dataclass
class Job:
    """One generation request travelling from the HTTP handler to the worker thread."""

    model: str
    prompt_ids: list[int]
    params: SamplingParams
    deadline: float
    emit: Callable[[Event], None]  # must be thread-safe: called from the worker thread
    cancel: threading.Event = field(default_factory=threading.Event)


class TokenStreamer:
    """One job's tokens: decodes as they come, cuts at stop strings, emits only text no stop string can claim."""

    def __init__(self, tokenizer: Any, job: Job, stop_ids: set[int]) -> None:
        self.tokenizer, self.job, self.stop_ids = tokenizer, job, stop_ids
        self.ids: list[int] = []
        self.sent = 0
        self.hit_stop = self.done = False
        self.text = ""
        self._hold = max((len(s) for s in job.params.stop), default=1) - 1

    def put_token(self, token: int) -> None:
        if self.done:  # a finished row of a batch keeps receiving padding
            return
        self.ids.append(token)
        self.done = token in self.stop_ids or len(self.ids) >= self.job.params.max_tokens
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd") and not self.done:  # half of a multi-byte character: wait for the rest
            return
        for stop in self.job.params.stop:
            index = text.find(stop) if stop else -1
            if index != -1:
                text, self.hit_stop, self.done = text[:index], True, True
        self.text = text
        safe = len(text) if self.done else max(self.sent, len(text) - self._hold)
        if safe > self.sent:
            self.job.emit(Event("delta", text[self.sent : safe]))
            self.sent = safe

    def flush(self) -> None:
        """Emit the text held back (a possible stop string's start, half a character) once decoding ended."""
        if len(self.text) > self.sent:
            self.job.emit(Event("delta", self.text[self.sent :]))
            self.sent = len(self.text)

