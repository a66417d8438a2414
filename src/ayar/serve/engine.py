"""The serve engines by name, and the one import path for what the HTTP API and the engines share.

:class:`QueuedEngine` (``ayar.serve.queued_engine``) is what the HTTP API talks to: submit a :class:`Job`
(``ayar.serve.jobs``), hear its events. The engines behind it are ``ayar.serve.transformers_engine``
(adapters by name, exact parity with training), ``ayar.serve.llamacpp_engine`` (an exported GGUF in
llama.cpp, for CPUs) and ``ayar.serve.vllm_engine`` (vLLM, for GPUs); ``serve.engine`` in the recipe
chooses one by its name in :data:`ENGINES`. Each factory takes an :class:`EngineRequest` and gives a
:class:`PreparedEngine` (``ayar.serve.engine_factory``).
"""

from __future__ import annotations

import importlib

from ayar.errors import UsageError
from ayar.serve.engine_factory import (
    EngineFactory,
    EngineRequest,
    PreparedEngine,
    refuse_adapters,
)
from ayar.serve.jobs import (
    SAMPLING_DEFAULTS,
    Event,
    Job,
    QueueFullError,
    SamplingParams,
    TokenStreamer,
    sampling_defaults,
)
from ayar.serve.queued_engine import QueuedEngine
from ayar.serve.transformers_engine import Engine, load_engine, prepare_transformers

__all__ = [
    "ENGINES", "SAMPLING_DEFAULTS", "Engine", "EngineFactory", "EngineRequest", "Event", "Job", "PreparedEngine",
    "QueueFullError", "QueuedEngine", "SamplingParams", "TokenStreamer", "load_engine", "prepare_engine",
    "prepare_transformers", "refuse_adapters", "sampling_defaults",
]


ENGINES: dict[str, str] = {
    "transformers": "ayar.serve.transformers_engine:prepare_transformers",
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
