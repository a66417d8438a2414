"""The part every serve engine shares: a bounded job queue and one worker thread that batches jobs.

The worker takes the queued jobs that decode alike (same model and sampling settings) as one batch, without
waiting for a batch to fill (dynamic batching); a subclass says how a batch is generated. Requests wait in a
bounded queue; a full queue is the caller's 429, with a Retry-After from the running mean of job time.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import replace
from typing import Any

from ayar.serve.jobs import Event, Job, QueueFullError, TokenStreamer


class QueuedEngine:
    """The part every engine shares: served names, the tokenizer that renders prompts as training did, the
    bounded queue, the worker thread and batching; a subclass says how a batch of jobs is generated."""

    kind = "queued"
    """The engine's name in ``serve.engine``, for error messages."""
    honours: frozenset[str] = frozenset()
    """The optional request fields this engine carries out (``logprobs``, ``response_format``,
    ``tool_choice``); the API refuses the others with a 400 rather than drop them."""

    def __init__(self, tokenizer: Any, names: dict[str, str | None], context_length: int, stop_ids: set[int],
                 defaults: dict[str, float], max_queue: int = 64, max_batch: int = 32) -> None:
        """names maps each served model name to what the engine knows it by (a peft adapter name, or None)."""
        self.tokenizer, self.names, self.context_length = tokenizer, names, context_length
        self.max_batch, self.stop_ids, self.defaults = max_batch, stop_ids, defaults
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._held: list[Job] = []  # taken from the queue but not batchable with the batch that ran
        self._running = 0
        self._mean_seconds = 0.5  # running mean of job time, for Retry-After
        self._thread: threading.Thread | None = None
        self.cancelled_jobs = 0
        self.largest_batch = 0

    # ------------------------------------------------------------- lifecycle

    def start(self) -> QueuedEngine:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._work, name="ayar-generate", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Let queued jobs finish, then end the worker thread."""
        if self._thread and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    @property
    def queue_depth(self) -> int:
        """Jobs waiting plus the jobs running."""
        return self._queue.qsize() + len(self._held) + self._running

    def submit(self, job: Job) -> None:
        """Queue a job (its unset sampling settings take the model's defaults), or raise QueueFullError."""
        unset = {name: value for name, value in self.defaults.items() if getattr(job.params, name) is None}
        job.params = replace(job.params, **unset)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            wait = self._mean_seconds * (self.queue_depth + 1)
            raise QueueFullError(max(1, round(wait))) from None

    # ------------------------------------------------------------- prompts

    def has_chat_template(self) -> bool:
        return bool(getattr(self.tokenizer, "chat_template", None))

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of a conversation rendered with the chat template saved at training time."""
        from ayar.data.templates import render_prompt

        return self.encode_text(render_prompt(self.tokenizer, messages))

    def encode_text(self, text: str) -> list[int]:
        """Token ids of a raw completion prompt (the template already adds its own special tokens)."""
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def compile_constraint(self, schema: dict[str, Any]) -> Any:
        """The grammar that keeps an answer to JSON matching ``schema``; ValueError for a schema it cannot
        compile. Only engines that honour ``response_format`` have one."""
        raise NotImplementedError(f"the {self.kind} engine has no constrained decoding")

    def compile_call(self, tools: list[dict[str, Any]]) -> Any:
        """The grammar that keeps an answer to one call of one of ``tools`` (name and arguments matching its
        schema), written as the chat template teaches calls; only engines that honour ``tool_choice``."""
        raise NotImplementedError(f"the {self.kind} engine has no constrained decoding")

    def compile_chosen_call(self, tools: list[dict[str, Any]], parallel: bool,
                            answer_schema: dict[str, Any] | None) -> Any:
        """The grammar of an answer that may call ``tools`` (tool_choice auto): free text, or the
        ``answer_schema`` JSON where given, until the model opens a call, which is then held to an offered
        function and its schema; ``parallel`` False: one call at most. Only engines that honour ``tool_choice``."""
        raise NotImplementedError(f"the {self.kind} engine has no constrained decoding")

    # ------------------------------------------------------------- the worker

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._running = len(batch)
            self.largest_batch = max(self.largest_batch, len(batch))
            started = time.monotonic()
            try:
                self._run_batch(batch)
            except Exception as exc:
                for job in batch:
                    job.emit(Event("error", f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                self._running = 0
                per_job = (time.monotonic() - started) / len(batch)
                self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * per_job

    @staticmethod
    def _batch_key(job: Job) -> tuple:
        """Jobs share one ``generate`` call only when they decode alike; a seeded sampling job runs alone, so
        that its seed alone decides its sample (a greedy one ignores its seed: evaluation harnesses send one),
        and so does a constrained one (its grammar holds one row's state); prompts only scored (max_tokens 0)
        batch among themselves."""
        p = job.params
        sampled = (p.top_p, p.top_k) if p.temperature > 0 else None
        alone = (p.seed is not None and p.temperature > 0) or p.constraint is not None
        return (job.model, p.temperature, sampled, p.repetition_penalty, p.min_tokens, p.max_tokens == 0,
                id(job) if alone else None)

    def _next_batch(self) -> list[Job] | None:
        """Up to max_batch queued jobs that decode alike (dynamic batching: no waiting for a batch to fill)."""
        first = self._held.pop(0) if self._held else self._queue.get()
        if first is None:
            return None
        batch, key = [first], self._batch_key(first)
        longest_prompt, most_tokens = len(first.prompt_ids), first.params.max_tokens
        candidates, self._held = self._held, []
        while len(candidates) < 4 * self.max_batch:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                self._queue.put(None)  # stop after this batch
                break
            candidates.append(job)
        for job in candidates:
            fits = (max(longest_prompt, len(job.prompt_ids)) + max(most_tokens, job.params.max_tokens)
                    <= self.context_length)
            if len(batch) < self.max_batch and self._batch_key(job) == key and fits:
                batch.append(job)
                longest_prompt = max(longest_prompt, len(job.prompt_ids))
                most_tokens = max(most_tokens, job.params.max_tokens)
            else:
                self._held.append(job)
        return batch

    def _run_batch(self, jobs: list[Job]) -> None:
        """Generate the jobs of one batch; every job hears Event("done", ...) or Event("error", ...) at its end."""
        raise NotImplementedError

    def _live(self, jobs: list[Job]) -> list[Job]:
        """The jobs still wanted; cancelled and expired ones are finished here without generating."""
        live = []
        for job in jobs:
            if job.cancel.is_set():
                self.cancelled_jobs += 1
                self._finish(job, Event("done", "cancelled", 0))
            elif time.monotonic() > job.deadline:
                self._finish(job, Event("done", "timeout", 0))
            else:
                live.append(job)
        return live

    def _finish(self, job: Job, event: Event) -> None:
        """Count the job as no longer running before its caller hears that it is done."""
        self._running = max(0, self._running - 1)
        job.emit(event)

    def _finish_reason(self, job: Job, streamer: TokenStreamer) -> str:
        if job.cancel.is_set():
            self.cancelled_jobs += 1
            return "cancelled"
        if streamer.hit_stop or (streamer.ids and streamer.ids[-1] in self.stop_ids):
            return "stop"
        if len(streamer.ids) >= job.params.max_tokens:
            return "length"
        return "timeout" if time.monotonic() > job.deadline else "stop"
