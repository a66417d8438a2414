"""Tool-call accuracy on held-out conversations whose reference answer is a tool call, or a plain answer
where tools were offered.

Per example whose reference calls a tool: the right function name (``tool_name``, read from the
``"name"`` field even when the call's JSON is broken), a call that parses with JSON-object arguments
(``tool_json``) and arguments equal to the reference's (``tool_args``). Per example that offers tools but
whose reference answers in text: no call made (``tool_none``: the model answers directly instead of
calling a tool it does not need). The summary averages each score over the examples it applies to;
it is empty when none applies. Answers are read by the same parser ``ayar serve`` uses.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ayar.data.templates import parse_tool_calls

CALL_METRICS = ("tool_name", "tool_json", "tool_args")
TOOL_METRICS = (*CALL_METRICS, "tool_none")
_NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')  # the called name, read even when the call's JSON is broken


def _call_scores(output: str, want: dict[str, Any], offered: list[dict[str, Any]] | None) -> tuple[float, ...]:
    """(tool_name, tool_json, tool_args) of one answer against the reference call."""
    _, calls = parse_tool_calls(output, offered)
    got = calls[0]["function"] if calls else None
    named = got["name"] if got is not None else next(iter(_NAME.findall(output)), None)
    return (float(named == want["name"]), float(got is not None),
            float(got is not None and got["name"] == want["name"] and got["arguments"] == want["arguments"]))


def makes_a_call(output: str, offered: list[dict[str, Any]] | None) -> bool:
    """Whether an answer calls a tool: a parsed call, or a ``<tool_call>`` block that does not parse."""
    return bool(parse_tool_calls(output, offered)[1]) or "<tool_call>" in output


def tool_call_scores(outputs: list[str], references: list[dict[str, Any]],
                     tools: list[list[dict[str, Any]] | None]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(summary, per-example scores) of generated answers against reference assistant messages.

    A score that does not apply to an example is NaN there and left out of the summary.
    """
    per_example: dict[str, list[float]] = {name: [] for name in TOOL_METRICS}
    for output, reference, offered in zip(outputs, references, tools, strict=True):
        expected = reference.get("tool_calls") or []
        calls = _call_scores(output, expected[0]["function"], offered) if expected else (math.nan,) * 3
        none = float(not makes_a_call(output, offered)) if offered and not expected else math.nan
        for name, value in zip(TOOL_METRICS, (*calls, none), strict=True):
            per_example[name].append(value)
    counts = {name: sum(not math.isnan(v) for v in values) for name, values in per_example.items()}
    if not counts["tool_name"] and not counts["tool_none"]:
        return {}, {}
    summary: dict[str, float] = {}
    for name, values in per_example.items():
        if counts[name]:
            summary[f"{name}_accuracy"] = round(sum(v for v in values if not math.isnan(v)) / counts[name], 4)
    if counts["tool_name"]:
        summary["tool_call_examples"] = counts["tool_name"]
    if counts["tool_none"]:
        summary["tool_none_examples"] = counts["tool_none"]
    return summary, per_example
