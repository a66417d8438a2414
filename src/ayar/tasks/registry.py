"""What a task is (:class:`TaskSpec`) and the registry of tasks by name.

This module sits at the bottom with the recipe (which validates ``task`` against it), so it imports no ML
library: a task's model class is named (``AutoModelForCausalLM``) and its layer code is named
(``"ayar.train.tasks:encode_causal_lm"``), each resolved by the layer that uses it.
"""

from __future__ import annotations

import difflib
import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ayar.errors import UsageError

Part = str | Callable[..., Any]
"""A layer's code for a task: ``"module:function"``, imported on first use so that naming it imports
nothing, or the function itself (a task defined outside ayar, whose module may import what it likes)."""

PARTS: dict[str, str] = {"encode": "train", "collator": "train", "evaluate": "eval", "prompt": "eval"}
"""Every part a task defines, and the layer (``ayar.<layer>``) whose code runs it."""


@dataclass(frozen=True)
class TaskSpec:
    """One task's whole definition: its facts, and the code each layer runs for it."""

    name: str
    summary: str
    auto_class: str  # transformers Auto class that loads its model (AutoModelForCausalLM)
    peft_task_type: str  # peft.TaskType member (CAUSAL_LM)
    formats: tuple[str, ...]  # data.format values it trains on
    generative: bool  # answers with generated text (the risk probes that read answers apply), else with a label
    # Records carry a class label: the training split's labels become ids, the model gets a new head with
    # one output per label (peft saves it, transfer redraws it), and the untrained base has nothing to compare.
    label_map: bool = False
    # Records are conversations rendered with the tokenizer's chat template (prompt masking, the template
    # saved with the model, the chat-formatted risk and forgetting probes, preference training).
    chat: bool = False
    # A decoder-only model whose label at position i is input token i+1: packing rows and the chunked
    # loss apply, and per-token scores are read one position back.
    next_token: bool = False
    # (record, tokenizer, recipe, label map or None) -> {"input_ids", "attention_mask", "labels"}
    encode: Part = field(kw_only=True)
    # (tokenizer, model) -> the collator that pads a batch of encoded records
    collator: Part = field(kw_only=True)
    # (model, tokenizer, records, prompts, recipe) -> {"summary": corpus figures, "rows": per-example rows}
    evaluate: Part = field(kw_only=True)
    # (record, recipe) -> what the model is asked for one eval record
    prompt: Part = field(kw_only=True)

    def renders_chat(self, data_format: str) -> bool:
        """True when records of this format go through the chat template (plain ``text`` never does)."""
        return self.chat and data_format != "text"

    def part(self, name: str) -> Callable[..., Any]:
        """The function this task names for ``name`` (one of :data:`PARTS`), imported on first use."""
        if name not in PARTS:
            raise ValueError(f"'{name}' is not a task part; parts: {', '.join(PARTS)}")
        named = getattr(self, name)
        return named if callable(named) else _resolve(named, f"task '{self.name}' part '{name}'")


@functools.cache
def _resolve(reference: str, what: str) -> Callable[..., Any]:
    module_name, sep, attribute = reference.partition(":")
    if not sep:
        raise ValueError(f"{what} is '{reference}'; name it as 'module:function'")
    function = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(function):
        raise ValueError(f"{what} names '{reference}', and {module_name} has no function '{attribute}'")
    return function


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Make a task available to recipes by its name."""
    if spec.name in _TASKS and _TASKS[spec.name] != spec:
        raise ValueError(f"task '{spec.name}' is registered twice")
    _TASKS[spec.name] = spec
    return spec


def unregister_task(name: str) -> None:
    """Forget a task (tests that register a toy task clean up with it)."""
    _TASKS.pop(name, None)


def task_names() -> tuple[str, ...]:
    """Every registered task, in registration order."""
    return tuple(_TASKS)


def tasks_where(fact: str) -> tuple[str, ...]:
    """The registered tasks with a true ``fact`` (e.g. ``next_token``), for messages naming them."""
    return tuple(name for name, spec in _TASKS.items() if getattr(spec, fact))


def get_task(name: str) -> TaskSpec:
    """The task registered under ``name``; a clear error otherwise."""
    if name not in _TASKS:
        close = difflib.get_close_matches(name, _TASKS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"unknown task '{name}'{hint}; available: {', '.join(_TASKS)}")
    return _TASKS[name]
