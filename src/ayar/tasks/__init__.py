"""Tasks (causal_lm, classification, seq2seq, ...), one module each, registered by name.

A task's module holds its whole definition (:class:`TaskSpec`): the facts every layer reads instead of
naming tasks (the transformers Auto class, peft's task type, the data formats, generative or a label,
chat-formatted, next-token) and the code each layer runs for it, named as ``"module:function"``
(training's encoding and collator in ``ayar.train.tasks``, evaluation and the prompt of a record in
``ayar.eval.tasks``). Every module of this package is imported here, so a new task is one new file;
``tests/unit/tasks/`` checks that every registered task defines every part.
"""

from __future__ import annotations

import importlib
import pkgutil

from ayar.tasks.registry import (
    PARTS,
    Part,
    TaskSpec,
    get_task,
    register_task,
    task_names,
    tasks_where,
    unregister_task,
)

__all__ = ["PARTS", "Part", "TaskSpec", "get_task", "register_task", "task_names", "tasks_where", "unregister_task"]

# Task modules import nothing but the registry, so importing them all at once costs nothing.
for _module in pkgutil.iter_modules(__path__):
    if _module.name != "registry":
        importlib.import_module(f"{__name__}.{_module.name}")
