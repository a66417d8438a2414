"""The generation engine: the loaded model (and its LoRA adapters), a bounded job queue, one worker thread.

One worker thread runs ``model.generate`` for one request at a time: on a CPU torch already spreads one
generation over every core, and peft's active adapter is process-wide state, so concurrent calls would
add contention, not throughput. Requests wait in a bounded queue; a full queue is the caller's 429.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ayar.errors import UsageError

Event = tuple[Any, ...]  # ("delta", text) | ("done", finish_reason, completion_tokens) | ("error", message)


class QueueFullError(Exception):
    """The job queue is full; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"server busy: the request queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


@dataclass
class SamplingParams:
    """Decoding settings of one request (temperature 0 means greedy)."""

    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    min_tokens: int = 0


@dataclass
class Job:
    """One generation request travelling from the HTTP handler to the worker thread."""

    model: str
    prompt_ids: list[int]
    params: SamplingParams
    deadline: float
    emit: Callable[[Event], None]  # must be thread-safe: called from the worker thread
    cancel: threading.Event = field(default_factory=threading.Event)


class _JobStreamer(BaseStreamer):
    """Decodes new tokens as they come, cuts at stop strings and emits only text no stop string can still claim."""

    def __init__(self, tokenizer: Any, job: Job) -> None:
        self.tokenizer, self.job = tokenizer, job
        self.ids: list[int] = []
        self.sent = 0
        self.hit_stop = False
        self.text = ""
        self._prompt_seen = False
        self._hold = max((len(s) for s in job.params.stop), default=1) - 1

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompt itself
            self._prompt_seen = True
            return
        if self.hit_stop:
            return
        self.ids += value.reshape(-1).tolist()
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        for stop in self.job.params.stop:
            index = text.find(stop) if stop else -1
            if index != -1:
                text, self.hit_stop = text[:index], True
        self.text = text
        safe = len(text) if self.hit_stop else max(self.sent, len(text) - self._hold)
        if safe > self.sent:
            self.job.emit(("delta", text[self.sent : safe]))
            self.sent = safe

    def end(self) -> None:
        if len(self.text) > self.sent:
            self.job.emit(("delta", self.text[self.sent :]))
            self.sent = len(self.text)


class _StopWhen(StoppingCriteria):
    """Stops generation on a stop string, a cancelled job (client gone) or a passed deadline."""

    def __init__(self, streamer: _JobStreamer) -> None:
        self.streamer = streamer

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        job = self.streamer.job
        done = self.streamer.hit_stop or job.cancel.is_set() or time.monotonic() > job.deadline
        return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)


class Engine:
    """Serves one model under one or several names (a base and its LoRA adapters)."""

    def __init__(self, model: Any, tokenizer: Any, names: dict[str, str | None], max_queue: int = 64) -> None:
        """names maps each served model name to its peft adapter name (None: the base weights)."""
        self.model, self.tokenizer, self.names = model.eval(), tokenizer, names
        self.context_length = int(getattr(model.config, "max_position_embeddings", 0) or 2048)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=max_queue)
        self._running = 0
        self._mean_seconds = 0.5  # running mean of job time, for Retry-After
        self._thread: threading.Thread | None = None
        self.cancelled_jobs = 0

    # ------------------------------------------------------------- lifecycle

    def start(self) -> Engine:
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
        """Jobs waiting plus the job running."""
        return self._queue.qsize() + self._running

    def submit(self, job: Job) -> None:
        """Queue a job, or raise QueueFullError."""
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

    # ------------------------------------------------------------- the worker

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            self._running = 1
            started = time.monotonic()
            try:
                self._run_job(job)
            except Exception as exc:  # noqa: BLE001 - a failed job must not kill the worker
                job.emit(("error", f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                self._running = 0
                self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.monotonic() - started)

    def _run_job(self, job: Job) -> None:
        if job.cancel.is_set():
            self.cancelled_jobs += 1
            job.emit(("done", "cancelled", 0))
            return
        if time.monotonic() > job.deadline:
            job.emit(("done", "timeout", 0))
            return
        params = job.params
        streamer = _JobStreamer(self.tokenizer, job)
        sample = params.temperature > 0
        with self._use(job.model), torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            ids = torch.tensor([job.prompt_ids], dtype=torch.long, device=self.model.device)
            self.model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=params.max_tokens,
                min_new_tokens=min(params.min_tokens, params.max_tokens) or None,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                top_k=0 if sample else None,
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList([_StopWhen(streamer)]),
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.tokenizer.eos_token_id,
            )
        job.emit(("done", self._finish_reason(job, streamer), len(streamer.ids)))

    def _finish_reason(self, job: Job, streamer: _JobStreamer) -> str:
        if job.cancel.is_set():
            self.cancelled_jobs += 1
            return "cancelled"
        if streamer.hit_stop or (streamer.ids and streamer.ids[-1] == self.tokenizer.eos_token_id):
            return "stop"
        if len(streamer.ids) >= job.params.max_tokens:
            return "length"
        return "timeout" if time.monotonic() > job.deadline else "stop"

    @contextlib.contextmanager
    def _use(self, name: str) -> Iterator[None]:
        """Activate the adapter served under ``name`` (or switch adapters off for the base)."""
        adapter = self.names[name]
        if not hasattr(self.model, "peft_config"):
            yield
        elif adapter is None:
            with self.model.disable_adapter():
                yield
        else:
            self.model.set_adapter(adapter)
            yield


def _served_name(path: Path) -> str:
    """A run folder's name (for ``runs/x`` and ``runs/x/model``) or the model folder's own name."""
    path = path.resolve()
    return path.parent.name if path.name == "model" and (path.parent / "recipe.yaml").is_file() else path.name


def load_engine(
    model_path: Path,
    adapters: dict[str, Path] | None = None,
    served_name: str | None = None,
    max_queue: int = 64,
) -> Engine:
    """Load a merged model or a base with LoRA adapters; each adapter is served under its own name."""
    from peft import PeftModel

    from ayar.export import find_model_dir
    from ayar.models.load import is_adapter_dir, load_for_inference

    source = find_model_dir(Path(model_path))
    model, tokenizer = load_for_inference(source)
    name = served_name or _served_name(source)
    names: dict[str, str | None] = {name: "default" if is_adapter_dir(source) else None}
    for adapter_name, adapter_path in (adapters or {}).items():
        folder = find_model_dir(Path(adapter_path))
        if not is_adapter_dir(folder):
            raise UsageError(f"--adapter {adapter_name}={adapter_path}: not a LoRA adapter folder")
        if adapter_name in names:
            raise UsageError(f"model name '{adapter_name}' is used twice; give each adapter its own name")
        if isinstance(model, PeftModel):
            model.load_adapter(str(folder), adapter_name=adapter_name)
        else:
            model = PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name)
        names[adapter_name] = adapter_name
    return Engine(model, tokenizer, names, max_queue=max_queue)
