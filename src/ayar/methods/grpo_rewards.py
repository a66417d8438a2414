"""The rewards a GRPO run scores its sampled answers with: checkers, format, length, or a user's function.

Each reward is a function in the shape TRL's ``GRPOTrainer`` calls, ``(prompts, completions, **columns)
-> list[float]``, where ``columns`` holds the training rows' other fields (the task, the reference
answer...), one value per completion. ``answer`` grades each completion with its generated task's
checker (:mod:`ayar.data.checkers`) on what follows a ``<think>...</think>`` block; ``format`` asks for
the answer inside a tag (after a reasoning block, with ``think``); ``length`` for a short answer. A recipe may name its own function by dotted path (``my_rewards:score``): it is imported only
then, and it runs as the user's own code with the user's rights.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ayar.data.checkers import CHECKERS
from ayar.errors import UsageError

RewardFunction = Callable[..., list[float]]
# What TRL adds to a reward function's keyword arguments beside the dataset's columns.
TRAINER_KEYWORDS = ("completion_ids", "trainer_state", "log_extra", "log_metric", "environments")
BUILT_IN = ("answer", "format", "length")


class RewardSpec(BaseModel):
    """One reward of a GRPO recipe: a built-in one by ``name``, or the user's ``function``, and its weight."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["answer", "format", "length"] | None = Field(
        None, description="answer: the generated task's checker (exact, normalised, partial credit); format: the "
        "answer inside <tag>...</tag>; length: at most max_chars characters.")
    function: str | None = Field(None, description="A Python function 'module:name' (or 'module.name'), "
                                 "(prompts, completions, **record_fields) -> list[float]. It runs as your own code.")
    weight: float = Field(1.0, description="This reward's weight in the sum GRPO compares within a group.")
    tag: str = Field("answer", pattern=r"^[A-Za-z_][\w-]*$", description="format: the tag the answer goes in.")
    think: bool = Field(False, description="format: the full reward only for a non-empty <think>...</think> "
                        "block before the answer's tag (the block's opening may be in the prompt).")
    max_chars: int = Field(64, gt=0, description="length: the longest answer that gets the full reward.")

    @model_validator(mode="after")
    def _one_source(self) -> RewardSpec:
        if (self.name is None) == (self.function is None):
            raise ValueError("a reward needs exactly one of 'name' (answer, format, length) or 'function'")
        return self

    @property
    def label(self) -> str:
        return self.name or str(self.function)


def completion_text(completion: Any) -> str:
    """A completion as text: TRL passes a string, or for conversational prompts a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content") or "") for message in completion)


def _records(count: int, columns: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-completion records from TRL's column lists (the trainer's own keywords left out)."""
    fields = {k: v for k, v in columns.items() if k not in TRAINER_KEYWORDS and isinstance(v, list) and len(v) == count}
    return [{k: v[i] for k, v in fields.items()} for i in range(count)]


def tagged(text: str, tag: str) -> str | None:
    """The text inside the first ``<tag>...</tag>``, or None when there is none."""
    found = re.search(rf"<{tag}>(.*?)</{tag}>", text, re.DOTALL)
    return found.group(1).strip() if found else None


THINK_CLOSE = "</think>"


def after_reasoning(text: str) -> str:
    """The answer after a completion's reasoning (what follows the first ``</think>``), or the whole text
    without one: the reasoning may name wrong answers on the way to the right one."""
    _, closed, answer = text.partition(THINK_CLOSE)
    return answer.lstrip() if closed else text


def answer_reward(answer_tag: str | None = None) -> RewardFunction:
    """The checker of each completion's generated task (its ``task`` column), on the answer after any reasoning
    block; with ``answer_tag`` the answer is read inside that tag (0 without it)."""

    def answer(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        scores = []
        for completion, record in zip(completions, _records(len(completions), columns), strict=True):
            text = after_reasoning(completion_text(completion))
            text = tagged(text, answer_tag) if answer_tag else text
            scores.append(0.0 if text is None else CHECKERS[record["task"]](text, record))
        return scores

    return answer


def format_reward(tag: str, think: bool = False) -> RewardFunction:
    """1 for an answer that is one ``<tag>...</tag>`` block (a reasoning block may come before it), 0.5 for such a
    block with other text around it, 0 without one. With ``think`` the full reward needs a non-empty reasoning
    block first (its ``<think>`` may be the prompt's last words, as templates that open it write); without one,
    the tagged answer gets 0.5."""
    if think:
        whole = re.compile(rf"\s*(?:<think>)?(?P<reasoning>.*?)</think>\s*<{tag}>.*?</{tag}>\s*", re.DOTALL)
    else:
        whole = re.compile(rf"\s*(<think>.*?</think>\s*)?<{tag}>.*?</{tag}>\s*", re.DOTALL)

    def shaped(text: str) -> bool:
        found = whole.fullmatch(text)
        return found is not None and (not think or bool(found.group("reasoning").strip()))

    def format_(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        texts = [completion_text(c) for c in completions]
        return [1.0 if shaped(t) else 0.5 if tagged(t, tag) is not None else 0.0 for t in texts]

    format_.__name__ = f"format_think_{tag}" if think else f"format_{tag}"
    return format_


def length_reward(max_chars: int) -> RewardFunction:
    """1 up to ``max_chars`` characters, then ``max_chars / length``: rambling past the answer costs."""

    def length(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        sizes = [len(completion_text(c).strip()) for c in completions]
        return [1.0 if size <= max_chars else max_chars / size for size in sizes]

    return length


def import_user_reward(path: str) -> RewardFunction:
    """The user's reward function at ``module:name`` (or ``module.name``), imported now; the current folder is
    searched too, so a ``my_rewards.py`` beside the recipe's run is found. Runs the module's code."""
    module_name, sep, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not sep or not module_name or not attribute:
        raise UsageError(f"reward function '{path}' must be 'module:function' (e.g. my_rewards:score)")
    if str(Path.cwd()) not in sys.path:
        sys.path.append(str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"reward function '{path}': cannot import module '{module_name}' ({exc})") from None
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UsageError(f"reward function '{path}': module '{module_name}' has no function '{attribute}'")
    return _user_call(function, path)


def _user_call(function: Callable[..., Any], path: str) -> RewardFunction:
    """The user's function called with the prompts, the completions and the record fields only."""

    def user(prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        fields = {k: v for k, v in columns.items() if k not in TRAINER_KEYWORDS}
        scores = list(function(prompts, completions, **fields))
        if len(scores) != len(completions):
            raise UsageError(f"reward function '{path}' returned {len(scores)} scores for {len(completions)} answers")
        return [float(s) for s in scores]

    user.__name__ = path.replace(":", ".")
    return user


def reward_function(spec: RewardSpec, answer_tag: str | None = None) -> RewardFunction:
    """The function for one recipe reward."""
    if spec.function is not None:
        return import_user_reward(spec.function)
    if spec.name == "answer":
        return answer_reward(answer_tag)
    if spec.name == "format":
        return format_reward(spec.tag, spec.think)
    return length_reward(spec.max_chars)


def reward_functions(specs: list[RewardSpec], answer_tag: str | None = None) -> tuple[list[RewardFunction],
                                                                                      list[float]]:
    """(functions, weights) for TRL's ``reward_funcs`` and ``reward_weights``."""
    return [reward_function(s, answer_tag) for s in specs], [s.weight for s in specs]
