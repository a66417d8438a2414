"""The llama.cpp engine (``serve.engine: llamacpp``): an exported GGUF served through llama-cpp-python.

For CPU deployment of an exported model: llama.cpp's kernels (quantized or not) decode a small model
several times faster than transformers on a CPU. Behind the same API, auth, limits, request log and
metrics as the transformers engine; only the forward passes move to llama.cpp. Prompts are rendered and
tokenized by the run's own Hugging Face tokenizer (or, for a bare .gguf file, the tokenizer stored in the
file), so the chat template, end-of-turn tokens and tool-call parsing are training's; the GGUF export
already checked that llama.cpp tokenizes the reference conversations to the same ids.

One worker thread decodes one request at a time: a llama.cpp context holds one KV cache, and
llama_cpp.server serialises requests the same way. Requests that share a prompt prefix (a system prompt)
reuse its KV cache (llama-cpp-python's prefix match).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from ayar.errors import UsageError
from ayar.serve.constrained import GrammarConstraints, JsonGrammars
from ayar.serve.engine import (
    EngineRequest,
    Event,
    Job,
    PreparedEngine,
    QueuedEngine,
    SamplingParams,
    TokenStreamer,
    refuse_adapters,
    sampling_defaults,
)

LLAMA_CPP = "llama-cpp-python==0.3.36"
MAX_CONTEXT = 8192
"""Tokens the KV cache holds at most: llama.cpp allocates it whole up front, and a model trained on 128k
positions would take gigabytes for it (llama.cpp's own server defaults to 2048)."""


def require_llama_cpp() -> None:
    """Fail with one clear message when llama-cpp-python is not installed."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        raise UsageError(f"--engine llamacpp needs llama-cpp-python: pip install '{LLAMA_CPP}' "
                         "(it builds llama.cpp from source: 10-15 minutes on 2 cores)") from None


def find_gguf(target: Path) -> Path:
    """The GGUF file to serve: the target itself, the one .gguf in the folder, or a run's GGUF export
    (``<run>/export/gguf``, where `ayar export --format gguf` and `export.format: gguf` write it)."""
    target = Path(target)
    if target.is_file():
        if target.suffix != ".gguf":
            raise UsageError(f"--engine llamacpp serves a .gguf file, not {target}")
        return target
    run = target.parent if target.name == "model" else target
    folders = [target, run / "export" / "gguf"]
    for folder in folders:
        files = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
        if len(files) > 1:
            raise UsageError(f"{folder} holds several GGUF files ({', '.join(f.name for f in files)}); "
                             "serve one of them by its path")
        if files:
            return files[0]
    raise UsageError(f"--engine llamacpp serves an exported GGUF file, and {target} has none (looked in "
                     f"{', '.join(str(f) for f in folders)}): run `ayar export {run} --format gguf` first, "
                     "or give the .gguf file's path")


def tokenizer_folder(target: Path) -> Path | None:
    """The Hugging Face model folder beside the GGUF (a run's ``model``), whose tokenizer training used."""
    from ayar.export import find_model_dir

    target = Path(target)
    if target.is_file():
        return None
    try:
        return find_model_dir(target)
    except UsageError:
        return None


def _load_tokenizer(gguf: Path, folder: Path | None) -> tuple[Any, Any]:
    """(tokenizer, generation config or None): the run's own, else the ones stored in the GGUF file."""
    from transformers import AutoTokenizer, GenerationConfig

    if folder is not None:
        from ayar.models.load import load_tokenizer

        try:
            generation = GenerationConfig.from_pretrained(str(folder))
        except OSError:  # no generation_config.json: OpenAI's defaults
            generation = None
        return load_tokenizer(str(folder)), generation
    try:
        return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name), None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(f"could not read the tokenizer of {gguf}: {str(exc).splitlines()[0]}") from None


def trained_context(gguf: Path) -> int:
    """The context length the model was trained for, from the GGUF's metadata (0 if it names none), read by
    a vocabulary-only load in llama.cpp: no weights, well under a second."""
    import ctypes

    import llama_cpp
    from llama_cpp._utils import suppress_stdout_stderr  # what Llama(verbose=False) silences its loading with

    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    with suppress_stdout_stderr(disable=False):
        model = llama_cpp.llama_model_load_from_file(str(gguf).encode(), params)
    if not model:
        raise UsageError(f"llama.cpp cannot load {gguf}: not a GGUF model file it knows")
    try:
        value = ctypes.create_string_buffer(128)
        if llama_cpp.llama_model_meta_val_str(model, b"general.architecture", value, len(value)) < 0:
            return 0
        key = value.value + b".context_length"
        found = llama_cpp.llama_model_meta_val_str(model, key, value, len(value))
        return int(value.value) if found > 0 and value.value.isdigit() else 0
    finally:
        llama_cpp.llama_model_free(model)


def _end_of_generation_ids(llm: Any) -> set[int]:
    """Every token llama.cpp itself ends a generation on (eos, eot, <|im_end|>...): what llama.cpp's own
    server stops at, so the two engines end an answer on the same tokens."""
    import llama_cpp

    vocab = llm._model.vocab  # llama-cpp-python keeps the vocabulary handle here (no public accessor)
    return {t for t in range(llm.n_vocab()) if llama_cpp.llama_vocab_is_eog(vocab, t)}


class LlamaCppEngine(GrammarConstraints, QueuedEngine):
    """One GGUF model under one name, generated by llama.cpp one request at a time."""

    kind = "llamacpp"
    # Grammars are the transformers engine's (llguidance over the run's own tokenizer, which the GGUF export
    # checked llama.cpp tokenizes alike), applied as a llama.cpp logits processor: one constraint, the same
    # answers on both engines. logprobs stays refused (400): it needs llama.cpp's logits_all, not wired yet.
    honours = frozenset({"response_format", "tool_choice", "parallel_tool_calls"})

    def __init__(self, llm: Any, tokenizer: Any, name: str, stop_ids: set[int], defaults: dict[str, float],
                 max_queue: int = 64) -> None:
        super().__init__(tokenizer, {name: None}, llm.n_ctx(), stop_ids, defaults, max_queue, max_batch=1)
        self.llm = llm
        self._grammars = JsonGrammars(tokenizer, llm.n_vocab(), self.stop_ids)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the queued jobs, then free llama.cpp's model and context now (freed by the garbage
        collector at interpreter exit instead, llama-cpp-python prints a TypeError from a half-torn-down module)."""
        super().stop(timeout)
        if not self.alive:
            self.llm.close()

    def _run_batch(self, jobs: list[Job]) -> None:
        for job in self._live(jobs):  # max_batch 1: one job
            self._generate(job)

    def _generate(self, job: Job) -> None:
        import llama_cpp

        p, row = job.params, TokenStreamer(self.tokenizer, job, self.stop_ids)
        # an unseeded request gets llama.cpp's random seed; a fixed one would repeat its samples
        self.llm.set_seed(p.seed if p.seed is not None else llama_cpp.LLAMA_DEFAULT_SEED)
        tokens = self.llm.generate(job.prompt_ids, **_sampling(p), logits_processor=self._processors(job))
        try:
            for token in tokens:
                row.put_token(token)
                if row.done or job.cancel.is_set() or time.monotonic() > job.deadline:
                    break
        finally:
            tokens.close()
        row.flush()
        self._finish(job, Event("done", self._finish_reason(job, row), len(row.ids)))

    def _processors(self, job: Job) -> Any:
        """llama.cpp's logits processors of a job: the end tokens kept out until min_tokens tokens are
        generated, and the job's grammar; None without either."""
        import llama_cpp

        processors = [] if job.params.constraint is None else [job.params.constraint.numpy_processor()]
        if job.params.min_tokens:
            ends, prompt_length, least = sorted(self.stop_ids), len(job.prompt_ids), job.params.min_tokens

            def hold_ends(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
                if len(input_ids) - prompt_length < least:  # input_ids: the prompt and the tokens generated so far
                    scores[ends] = -np.inf
                return scores

            processors.insert(0, hold_ends)
        return llama_cpp.LogitsProcessorList(processors) if processors else None


def _sampling(p: SamplingParams) -> dict[str, float]:
    """llama.cpp's generate() settings for a request: temperature 0 is its greedy sampler; min_p and
    typical_p off, as OpenAI's API has neither."""
    sample = p.temperature > 0
    return {"temp": p.temperature if sample else 0.0, "top_p": p.top_p if sample else 1.0,
            "top_k": int(p.top_k or 0) if sample else 0, "min_p": 0.0, "typical_p": 1.0,
            "repeat_penalty": p.repetition_penalty or 1.0}


def preflight(gguf: Path, tokenizer: Any) -> None:
    """Decode a few tokens of the file in a child process first: a native crash of llama.cpp's kernels on
    this CPU or file type would otherwise take the server down mid-request. Here it raises ConsumerCrash,
    which the server reports as its load error (readyz and every request answer 503 with it)."""
    from ayar.export.llamacpp import in_llama_cpp

    ids = tokenizer("Hello", add_special_tokens=False)["input_ids"] or [0]
    reply = in_llama_cpp(gguf, f"{gguf} (served)", greedy={"prompts": [ids], "max_new_tokens": 2, "stops": []})
    if "load_error" in reply:
        raise UsageError(f"llama.cpp cannot load {gguf}: {reply['load_error']}")


def load_llamacpp_engine(target: Path, served_name: str | None = None, max_queue: int = 64,
                         threads: int | None = None) -> LlamaCppEngine:
    """Load the GGUF of ``target`` (a .gguf file, a folder holding one, or a run with a GGUF export)."""
    require_llama_cpp()
    from llama_cpp import Llama

    from ayar.eval.generate import stop_token_ids
    from ayar.serve.engine_factory import default_served_name

    gguf = find_gguf(Path(target))
    folder = tokenizer_folder(Path(target))
    tokenizer, generation = _load_tokenizer(gguf, folder)
    count = threads or max(1, (os.cpu_count() or 2) - 1)  # as the transformers engine: a core for the server
    # the model's own context length (as the transformers engine takes max_position_embeddings), capped
    context = min(MAX_CONTEXT, trained_context(gguf) or MAX_CONTEXT)
    preflight(gguf, tokenizer)
    llm = Llama(str(gguf), n_ctx=context, n_threads=count, n_threads_batch=count, verbose=False)
    config = SimpleNamespace(generation_config=generation)
    stop_ids = set(stop_token_ids(config, tokenizer)) | _end_of_generation_ids(llm)
    name = served_name or (default_served_name(folder) if folder is not None else gguf.stem)
    return LlamaCppEngine(llm, tokenizer, name, stop_ids, sampling_defaults(config), max_queue)


def prepare_llamacpp(request: EngineRequest) -> PreparedEngine:
    """The llama.cpp engine: llama-cpp-python installed and a GGUF to serve, checked before loading."""
    refuse_adapters("llamacpp", request)
    require_llama_cpp()
    find_gguf(request.model_path)
    return PreparedEngine(
        lambda: load_llamacpp_engine(request.model_path, request.served_name, request.max_queue, request.threads),
        has_training_folder=tokenizer_folder(request.model_path) is not None)
