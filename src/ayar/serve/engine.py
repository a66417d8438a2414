"""Generation engines: a bounded job queue and one worker thread in front of a model.

:class:`QueuedEngine` is what the HTTP API talks to (submit a job, hear its events); the engines behind it
are this module's :class:`Engine` (transformers: adapters by name, exact parity with training),
``ayar.serve.llamacpp_engine`` (an exported GGUF in llama.cpp, for CPUs) and ``ayar.serve.vllm_engine``
(vLLM, for GPUs); ``serve.engine`` in the recipe chooses one by its name in :data:`ENGINES`.

The transformers engine: one worker thread runs ``model.generate``: peft's active adapter is process-wide state, and on a CPU torch
already spreads one call over every core, so parallel calls would add contention, not throughput. Instead
the worker batches the queued jobs that decode alike (same model and sampling settings) into one left-padded
call, each row with its own stop strings, token budget, deadline and cancel flag (dynamic batching).
Requests wait in a bounded queue; a full queue is the caller's 429.
"""

from __future__ import annotations

import contextlib
import importlib
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ayar.errors import UsageError
from ayar.eval.generate import stop_token_ids
from ayar.safety import require_safetensors


class Event(NamedTuple):
    """What a job hears from an engine: ``Event("delta", text)``, ``Event("done", finish_reason, completion_tokens)``
    or ``Event("error", message)``."""

    kind: Literal["delta", "done", "error"]
    value: str  # the new text, the finish reason (stop, length, cancelled, timeout) or the error message
    tokens: int = 0  # completion tokens, on "done"


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


class _BatchStreamer(BaseStreamer):
    """Hands each row of a batched ``generate`` its own token."""

    def __init__(self, rows: list[TokenStreamer]) -> None:
        self.rows, self._prompt_seen = rows, False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # generate() first hands over the prompts themselves
            self._prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist(), strict=True):
            row.put_token(token)

    def end(self) -> None:
        for row in self.rows:
            row.flush()


class _StopRows(StoppingCriteria):
    """Per row: stop on its own stop string or token budget, a cancelled job (client gone) or its deadline."""

    def __init__(self, rows: list[TokenStreamer], prompt_length: int) -> None:
        self.rows, self.prompt_length = rows, prompt_length

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
        now, generated = time.monotonic(), input_ids.shape[1] - self.prompt_length
        done = [row.done or generated >= row.job.params.max_tokens or row.job.cancel.is_set()
                or now > row.job.deadline for row in self.rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


class QueuedEngine:
    """The part every engine shares: served names, the tokenizer that renders prompts as training did, the
    bounded queue, the worker thread and batching; a subclass says how a batch of jobs is generated."""

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
            except Exception as exc:  # noqa: BLE001 - a failed batch must not kill the worker
                for job in batch:
                    job.emit(Event("error", f"generation failed: {type(exc).__name__}: {exc}"))
            finally:
                self._running = 0
                per_job = (time.monotonic() - started) / len(batch)
                self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * per_job

    @staticmethod
    def _batch_key(job: Job) -> tuple:
        """Jobs share one ``generate`` call only when they decode alike; a seeded job runs alone, so that its
        seed alone decides its sample."""
        p = job.params
        sampled = (p.top_p, p.top_k) if p.temperature > 0 else None
        return (job.model, p.temperature, sampled, p.repetition_penalty, p.min_tokens,
                id(job) if p.seed is not None else None)

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


class Engine(QueuedEngine):
    """The transformers engine: one model under one or several names (a base and its LoRA adapters)."""

    def __init__(self, model: Any, tokenizer: Any, names: dict[str, str | None], max_queue: int = 64,
                 max_batch: int = 32) -> None:
        """names maps each served model name to its peft adapter name (None: the base weights)."""
        self.model = model.eval()
        super().__init__(tokenizer, names, int(getattr(model.config, "max_position_embeddings", 0) or 2048),
                         set(stop_token_ids(model, tokenizer)),  # eos and the chat template's end of turn
                         sampling_defaults(model), max_queue, max_batch)

    def _run_batch(self, jobs: list[Job]) -> None:
        live = self._live(jobs)
        if not live:
            return
        params = live[0].params  # all jobs of a batch decode alike
        rows = [TokenStreamer(self.tokenizer, job, self.stop_ids) for job in live]
        width = max(len(job.prompt_ids) for job in live)
        pad = self.tokenizer.pad_token_id
        # left padding: every row continues from the right edge
        ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in live], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in live])
        sample = params.temperature > 0
        most_tokens = max(job.params.max_tokens for job in live)
        with self._use(live[0].model), torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            self.model.generate(
                input_ids=ids.to(self.model.device),
                attention_mask=mask.to(self.model.device),
                max_new_tokens=most_tokens,
                min_new_tokens=min(params.min_tokens, most_tokens) or None,
                do_sample=sample,
                temperature=params.temperature if sample else None,
                top_p=params.top_p if sample else None,
                top_k=params.top_k if sample else None,
                repetition_penalty=params.repetition_penalty,
                streamer=_BatchStreamer(rows),
                stopping_criteria=StoppingCriteriaList([_StopRows(rows, width)]),
                pad_token_id=pad,
                eos_token_id=sorted(self.stop_ids),
            )
        for row in rows:
            self._finish(row.job, Event("done", self._finish_reason(row.job, row), len(row.ids)))

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
    max_batch: int = 32,
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
        require_safetensors(folder, "adapter_model", "adapter folder")  # never unpickle an adapter
        if isinstance(model, PeftModel):
            model.load_adapter(str(folder), adapter_name=adapter_name)
        else:
            model = PeftModel.from_pretrained(model, str(folder), adapter_name=adapter_name)
        names[adapter_name] = adapter_name
    return Engine(model, tokenizer, names, max_queue=max_queue, max_batch=max_batch)


# ---------------------------------------------------------------- the engines by name

@dataclass(frozen=True)
class EngineRequest:
    """What `ayar serve` asks of an engine: the target to serve, its extra adapters and the server's limits."""

    model_path: Path
    adapters: dict[str, Path] = field(default_factory=dict)
    served_name: str | None = None
    max_queue: int = 64
    max_batch: int = 32
    threads: int | None = None


@dataclass(frozen=True)
class PreparedEngine:
    """An engine checked as far as it can be without loading the model."""

    load: Callable[[], QueuedEngine]  # loads the model (minutes; the server runs it in the background)
    # The target holds the folder training wrote, whose template contract is checked before the port opens
    # (a bare GGUF file does not).
    has_training_folder: bool = True


EngineFactory = Callable[[EngineRequest], PreparedEngine]

ENGINES: dict[str, str] = {
    "transformers": "ayar.serve.engine:prepare_transformers",
    "llamacpp": "ayar.serve.llamacpp_engine:prepare_llamacpp",
    "vllm": "ayar.serve.vllm_engine:prepare_vllm",
}
"""Each engine's factory as ``"module:function"``: an engine's module (and the library it wraps) is
imported only when it is chosen."""


def prepare_engine(name: str, request: EngineRequest) -> PreparedEngine:
    """The engine registered under ``name``, checked (its library installed, something it can serve, no
    adapters where it cannot serve them) and ready to load; a UsageError naming the choices otherwise."""
    if name not in ENGINES:
        raise UsageError(f"unknown serve engine '{name}'; choose one of {', '.join(ENGINES)}")
    module_name, _, factory_name = ENGINES[name].partition(":")
    factory: EngineFactory = getattr(importlib.import_module(module_name), factory_name)
    return factory(request)


def refuse_adapters(engine: str, request: EngineRequest) -> None:
    """A clear error for --adapter with an engine that serves one merged model."""
    if request.adapters:
        raise UsageError(f"--adapter serves LoRA adapters by name with --engine transformers only; for --engine "
                         f"{engine}, export each fine-tune merged and serve it on its own")


def prepare_transformers(request: EngineRequest) -> PreparedEngine:
    """The transformers engine: nothing to check before loading (the contract check reads the folder)."""
    return PreparedEngine(lambda: load_engine(request.model_path, request.adapters, request.served_name,
                                              request.max_queue, request.max_batch))
