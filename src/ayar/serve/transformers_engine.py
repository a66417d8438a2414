"""The transformers engine (``serve.engine: transformers``): a model and its LoRA adapters served by name,
with exact parity with training.

One worker thread runs ``model.generate``: peft's active adapter is process-wide state, and on a CPU torch
already spreads one call over every core, so parallel calls would add contention, not throughput. Instead
the worker batches the queued jobs that decode alike (same model and sampling settings) into one left-padded
call, each row with its own stop strings, token budget, deadline and cancel flag (dynamic batching).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from ayar.errors import UsageError
from ayar.eval.generate import stop_token_ids
from ayar.safety import require_safetensors
from ayar.serve.constrained import GrammarConstraints, JsonGrammars
from ayar.serve.engine_factory import EngineRequest, PreparedEngine, default_served_name
from ayar.serve.jobs import Event, Job, TokenLogprobs, TokenStreamer, sampling_defaults
from ayar.serve.logprobs import score_tokens
from ayar.serve.queued_engine import QueuedEngine


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


class Engine(GrammarConstraints, QueuedEngine):
    """The transformers engine: one model under one or several names (a base and its LoRA adapters)."""

    kind = "transformers"
    honours = frozenset({"logprobs", "response_format", "tool_choice", "parallel_tool_calls"})

    def __init__(self, model: Any, tokenizer: Any, names: dict[str, str | None], max_queue: int = 64,
                 max_batch: int = 32) -> None:
        """names maps each served model name to its peft adapter name (None: the base weights)."""
        self.model = model.eval()
        super().__init__(tokenizer, names, int(getattr(model.config, "max_position_embeddings", 0) or 2048),
                         set(stop_token_ids(model, tokenizer)),  # eos and the chat template's end of turn
                         sampling_defaults(model), max_queue, max_batch)
        self._grammars = JsonGrammars(tokenizer, int(model.config.get_text_config().vocab_size), self.stop_ids)

    def _run_batch(self, jobs: list[Job]) -> None:
        live = self._live(jobs)
        if not live:
            return
        if live[0].params.max_tokens == 0:  # only scoring the prompts: no generate call
            for job in live:
                self._finish(job, Event("done", "length", 0, self._scores(job, [])))
            return
        rows = [TokenStreamer(self.tokenizer, job, self.stop_ids) for job in live]
        self._generate(live, rows)
        for row in rows:
            self._finish(row.job, Event("done", self._finish_reason(row.job, row), len(row.ids),
                                        self._scores(row.job, row.ids)))

    def _generate(self, live: list[Job], rows: list[TokenStreamer]) -> None:
        params = live[0].params  # all jobs of a batch decode alike
        width = max(len(job.prompt_ids) for job in live)
        pad = self.tokenizer.pad_token_id
        # left padding: every row continues from the right edge
        ids = torch.tensor([[pad] * (width - len(j.prompt_ids)) + j.prompt_ids for j in live], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(j.prompt_ids)) + [1] * len(j.prompt_ids) for j in live])
        sample = params.temperature > 0
        most_tokens = max(job.params.max_tokens for job in live)
        grammar = [params.constraint.processor()] if params.constraint is not None else None
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
                logits_processor=LogitsProcessorList(grammar) if grammar else None,
                streamer=_BatchStreamer(rows),
                stopping_criteria=StoppingCriteriaList([_StopRows(rows, width)]),
                pad_token_id=pad,
                eos_token_id=sorted(self.stop_ids),
            )

    def _scores(self, job: Job, generated: list[int]) -> TokenLogprobs | None:
        """The model's log-probabilities of the job's tokens, when it asked for them (one forward pass over
        the prompt and the answer, under the job's adapter)."""
        if job.params.logprobs is None:
            return None
        with self._use(job.model):
            scored = score_tokens(self.model, job.prompt_ids + generated, job.params.logprobs)
        prompt = scored[:len(job.prompt_ids)] if job.params.score_prompt else []
        return TokenLogprobs(prompt, scored[len(job.prompt_ids):])

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
    from ayar.models.load import is_adapter_dir, load_for_inference, on_accelerator

    source = find_model_dir(Path(model_path))
    model, tokenizer = load_for_inference(source)
    name = served_name or default_served_name(source)
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
    return Engine(on_accelerator(model), tokenizer, names, max_queue=max_queue, max_batch=max_batch)


def prepare_transformers(request: EngineRequest) -> PreparedEngine:
    """The transformers engine: nothing to check before loading (the contract check reads the folder)."""
    return PreparedEngine(lambda: load_engine(request.model_path, request.adapters, request.served_name,
                                              request.max_queue, request.max_batch))
