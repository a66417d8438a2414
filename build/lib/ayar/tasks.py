"""The task registry: what each task (causal_lm, classification, seq2seq) is, stated once.

A task is declared here with the facts every layer needs: the transformers Auto class of its model,
peft's task type, the data formats it trains on, and what kind of task it is (generates text or picks a
label, chat-formatted, next-token). The layers read these facts instead of naming tasks; the two layers
whose code differs per task register it by name (``train/tasks.py``: encoding and collator;
``eval/tasks.py``: evaluation and the prompt of a record), and ``tests/unit/test_tasks.py`` checks that
every registered task has all of them.

This module sits at the bottom with the recipe (which validates ``task`` against it), so it imports
no ML library: classes are named, and resolved where they are used.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ayar.errors import UsageError


@dataclass(frozen=True)
class TaskSpec:
    """One task's facts."""

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

    def renders_chat(self, data_format: str) -> bool:
        """True when records of this format go through the chat template (plain ``text`` never does)."""
        return self.chat and data_format != "text"


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


register_task(TaskSpec(
    "causal_lm", "Decoder-only language model: instructions, chats or plain text in, text out.",
    "AutoModelForCausalLM", "CAUSAL_LM", ("alpaca", "messages", "sharegpt", "text"), generative=True,
    chat=True, next_token=True))
register_task(TaskSpec(
    "classification", "A label per text (sequence classification head).",
    "AutoModelForSequenceClassification", "SEQ_CLS", ("classification",), generative=False, label_map=True))
register_task(TaskSpec(
    "seq2seq", "Encoder-decoder: a source text in, a target text out.",
    "AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM", ("seq2seq",), generative=True))
