"""The task registry: what each task (causal_lm, classification, seq2seq) is, stated once.

A task is declared here with the facts every layer needs: the transformers Auto class of its model,
peft's task type, the data formats it trains on, whether it generates text. The layers read these
facts instead of keeping their own tables; each layer registers its task behaviour by name
(``train/tasks.py``: encoding and collator; ``eval/tasks.py``: evaluation), and
``tests/unit/test_tasks.py`` checks that every registered task has all of them.

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
    generative: bool  # answers with generated text (else with a label)


_TASKS: dict[str, TaskSpec] = {}


def register_task(spec: TaskSpec) -> TaskSpec:
    """Make a task available to recipes by its name."""
    if spec.name in _TASKS and _TASKS[spec.name] != spec:
        raise ValueError(f"task '{spec.name}' is registered twice")
    _TASKS[spec.name] = spec
    return spec


def task_names() -> tuple[str, ...]:
    """Every registered task, in registration order."""
    return tuple(_TASKS)


def get_task(name: str) -> TaskSpec:
    """The task registered under ``name``; a clear error otherwise."""
    if name not in _TASKS:
        close = difflib.get_close_matches(name, _TASKS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UsageError(f"unknown task '{name}'{hint}; available: {', '.join(_TASKS)}")
    return _TASKS[name]


register_task(TaskSpec(
    "causal_lm", "Decoder-only language model: instructions, chats or plain text in, text out.",
    "AutoModelForCausalLM", "CAUSAL_LM", ("alpaca", "messages", "sharegpt", "text"), generative=True))
register_task(TaskSpec(
    "classification", "A label per text (sequence classification head).",
    "AutoModelForSequenceClassification", "SEQ_CLS", ("classification",), generative=False))
register_task(TaskSpec(
    "seq2seq", "Encoder-decoder: a source text in, a target text out.",
    "AutoModelForSeq2SeqLM", "SEQ_2_SEQ_LM", ("seq2seq",), generative=True))
