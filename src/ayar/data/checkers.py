"""Answer checkers for the generated tasks: one per task, scoring a model's answer from 0 to 1.

Each generated task (``ayar.data.synthetic.TASKS``, ``ayar.data.synthetic_tools.ALL_TOOL_TASKS``) has a
checker here under its name, so a reward (GRPO's) or a report can grade an answer against the record the
task generated. A checker gives 1 for the right answer once case, spacing and a closing full stop are set
aside; partial credit only where a part of the answer can be right on its own: a date's day, month and
year, the words of a spelled-out number, a Turkish suffix on the right stem, a tool call that parses
and names the right function. A new generated task brings its checker into :data:`CHECKERS`; a test
checks that every task has one.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable
from difflib import SequenceMatcher
from typing import Any

from ayar.data.synthetic import EN_MONTHS, TR_MONTHS
from ayar.data.templates import parse_tool_calls

# (the model's answer, the record the task generated) -> a score from 0 to 1
Checker = Callable[[str, dict[str, Any]], float]

_TR_LOWER = str.maketrans({"İ": "i", "I": "ı"})
_SPACES = re.compile(r"\s+")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def normalise(text: str) -> str:
    """The answer without case (Turkish rules: İ→i, I→ı), outer quotes, a closing full stop or extra spaces."""
    text = unicodedata.normalize("NFC", text).translate(_TR_LOWER).lower()
    text = _SPACES.sub(" ", text).strip().strip("\"'`").strip()
    return text.removesuffix(".").strip()


def first_line(text: str) -> str:
    """The answer's first non-empty line: what the short generated tasks ask for."""
    return next((line for line in text.strip().splitlines() if line.strip()), "")


def exact(answer: str, record: dict[str, Any]) -> float:
    """1 when the normalised first line equals the normalised reference, else 0."""
    return float(normalise(first_line(answer)) == normalise(str(record["output"])))


def upper_exact(answer: str, record: dict[str, Any]) -> float:
    """Capital letters are the task itself: the first line must equal the reference with its case."""
    return float(first_line(answer).strip().removesuffix(".").strip() == record["output"])


def number(answer: str, record: dict[str, Any]) -> float:
    """1 when the first number in the answer equals the reference number."""
    found = _NUMBER.search(answer)
    return float(found is not None and float(found.group()) == float(record["output"]))


def _date_parts(text: str, month_names: list[str]) -> tuple[set[str], str | None]:
    """(the numbers in a written date, its month as an index 1-12 among ``month_names``, or None)."""
    words = normalise(text).replace(",", " ").split()
    months = [normalise(m) for m in month_names]
    month = next((str(months.index(w) + 1) for w in words if w in months), None)
    return {str(int(w)) for w in words if w.isdigit()}, month


def _reference_months(reference: str) -> list[str]:
    """The month names of the reference's language: a Turkish date's month must be written in Turkish."""
    words = normalise(reference).replace(",", " ").split()
    return TR_MONTHS if any(normalise(m) in words for m in TR_MONTHS) else EN_MONTHS


def date_parts(answer: str, record: dict[str, Any]) -> float:
    """A third for each of day, month and year right (the right month with a wrong day scores 2/3 with the year).

    The month counts only in the reference's language, and an answer other than the reference's text never
    scores 1 (5/6 at most): a GRPO policy rewarded fully for "14 May 1999" against "14 Mayıs 1999" learned
    to write Turkish dates in English, which exact match counts wrong.
    """
    if exact(answer, record):
        return 1.0
    year, month, day = (str(int(part)) for part in record["input"].split("-"))
    numbers, got_month = _date_parts(first_line(answer), _reference_months(str(record["output"])))
    right = float(year in numbers) + float(got_month == month) + float(day in numbers - {year})
    return min(right / 3, 5 / 6)


def word_overlap(answer: str, record: dict[str, Any]) -> float:
    """Exact gives 1; otherwise half the share of the reference's words in the right order (a number spelled out)."""
    if exact(answer, record):
        return 1.0
    got, want = normalise(first_line(answer)).split(), normalise(str(record["output"])).split()
    return 0.5 * SequenceMatcher(None, got, want, autojunk=False).ratio()


def suffixed(answer: str, record: dict[str, Any]) -> float:
    """Exact gives 1; the right stem with a wrong suffix gets half the share of the suffix's letters right."""
    if exact(answer, record):
        return 1.0
    got, want, stem = normalise(first_line(answer)), normalise(record["output"]), normalise(record["input"])
    if not got.startswith(stem) or got == stem:
        return 0.0
    tail, right = got[len(stem):], want[len(stem):]
    same = sum(a == b for a, b in zip(tail, right, strict=False))
    return 0.5 * same / max(len(tail), len(right))


def label(answer: str, record: dict[str, Any]) -> float:
    """A classification record: the label's name."""
    return float(normalise(first_line(answer)) == normalise(record["label"]))


def reference_call(record: dict[str, Any]) -> dict[str, Any] | None:
    """The tool call the record's first assistant turn makes (name, arguments as a dict), or None."""
    reference = record.get("reference") or next(m for m in record["messages"] if m["role"] == "assistant")
    reference = json.loads(reference) if isinstance(reference, str) else reference
    calls = reference.get("tool_calls") or []
    if not calls:
        return None
    function = calls[0]["function"]
    arguments = function["arguments"]
    return {"name": function["name"], "arguments": json.loads(arguments) if isinstance(arguments, str) else arguments}


def _offered(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    tools = record.get("tools") or None  # a training row holds "" where no tool is offered
    return json.loads(tools) if isinstance(tools, str) else tools


def tool_call(answer: str, record: dict[str, Any]) -> float:
    """A third each for a call that parses, the right function, and arguments equal to the reference's."""
    want = reference_call(record)
    if want is None:
        return no_tool(answer, record)
    _, calls = parse_tool_calls(answer, _offered(record))
    if not calls:
        return 0.0
    got = calls[0]["function"]
    right_name = got["name"] == want["name"]
    return (1 + float(right_name) + float(right_name and got["arguments"] == want["arguments"])) / 3


def no_tool(answer: str, record: dict[str, Any]) -> float:
    """A request no tool serves: half for making no call, half more for the reference's answer."""
    if parse_tool_calls(answer, _offered(record))[1] or "<tool_call>" in answer:
        return 0.0
    reference = record.get("reference") or next(m for m in record["messages"] if m["role"] == "assistant")
    reference = json.loads(reference) if isinstance(reference, str) else reference
    return 0.5 + 0.5 * float(normalise(answer) == normalise(reference.get("content") or ""))


CHECKERS: dict[str, Checker] = {
    "add": number,
    "reverse": exact,
    "upper": upper_exact,
    "date": date_parts,
    "month": exact,
    "parity": exact,
    "number_words": word_overlap,
    "plural": suffixed,
    "locative": suffixed,
    "ablative": suffixed,
    "topic": label,
    "get_weather": tool_call,
    "convert_currency": tool_call,
    "get_local_time": tool_call,
    "create_reminder": tool_call,
    "convert_units": tool_call,
    "no_tool": no_tool,
}


def check(task: str, answer: str, record: dict[str, Any]) -> float:
    """The score of ``answer`` for a record of the generated task ``task`` (KeyError for an unknown task)."""
    return CHECKERS[task](answer, record)
