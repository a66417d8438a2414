"""The task registry: every task is declared once, and every layer has its behaviour for each."""

from __future__ import annotations

import typing

import pytest
import transformers
from peft import TaskType

from ayar.errors import UsageError
from ayar.eval.tasks import EVALUATORS
from ayar.methods import available_methods
from ayar.methods.lora import PEFT_TASK_TYPES
from ayar.recipe import DataFormat, Task
from ayar.tasks import get_task, task_names
from ayar.train.tasks import COLLATORS, ENCODERS

TASKS = task_names()  # listed from the registry, never by hand


def test_the_recipe_accepts_exactly_the_registered_tasks() -> None:
    assert set(typing.get_args(Task)) == set(TASKS) and {"causal_lm", "classification", "seq2seq"} <= set(TASKS)


@pytest.mark.parametrize("name", TASKS)
def test_every_task_is_complete_in_every_layer(name: str) -> None:
    spec = get_task(name)
    assert issubclass(getattr(transformers, spec.auto_class), transformers.models.auto.auto_factory._BaseAutoModelClass)
    assert PEFT_TASK_TYPES[name] is TaskType[spec.peft_task_type]
    assert set(spec.formats) <= set(typing.get_args(DataFormat))
    assert name in ENCODERS and name in COLLATORS and name in EVALUATORS


def test_methods_support_every_task_unless_they_narrow_it() -> None:
    full = available_methods()["full"]
    assert set(full.tasks) == set(TASKS)


def test_an_unknown_task_names_the_closest() -> None:
    with pytest.raises(UsageError, match="did you mean 'seq2seq'"):
        get_task("seq2sq")
