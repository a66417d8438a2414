"""Tool-call accuracy on held-out conversations whose reference answer is a tool call.

Per example: the right function name (``tool_name``, read from the ``"name"`` field even when the
call's JSON is broken), a call that parses with a JSON-object arguments (``tool_json``) and arguments equal to the reference's (``tool_args``); the summary averages them over
the examples whose reference turn calls a tool. Answers are read by the same parser ``ayar serve`` uses.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ayar.data.templates import parse_tool_calls

TOOL_METRICS = ("tool_name", "tool_json", "tool_args")
_NAME = re.compile(r'"name"\s*:\s*"([^"]+)"')  # the called name, read even when the call's JSON is broken


def tool_call_scores(outputs: list[str], references: list[dict[str, Any]],
                     tools: list[list[dict[str, Any]] | None]) -> tuple[dict[str, float], dict[str, list[float]]]:
    """(summary, per-example scores) of generated answers against reference assistant messages.

    Examples whose reference makes no tool call score NaN and are left out of the summary; the summary is
    empty when no reference makes one.
    """
    per_example: dict[str, list[float]] = {name: [] for name in TOOL_METRICS}
    for output, reference, offered in zip(outputs, references, tools, strict=True):
        expected = reference.get("tool_calls") or []
        if not expected:
            for name in TOOL_METRICS:
                per_example[name].append(math.nan)
            continue
        _, calls = parse_tool_calls(output, offered)
        got = calls[0]["function"] if calls else None
        want = expected[0]["function"]
        named = got["name"] if got is not None else next(iter(_NAME.findall(output)), None)
        per_example["tool_json"].append(float(got is not None))
        per_example["tool_name"].append(float(named == want["name"]))
        per_example["tool_args"].append(float(got is not None and got["name"] == want["name"]
                                              and got["arguments"] == want["arguments"]))
    scored = [v for v in per_example["tool_name"] if not math.isnan(v)]
    if not scored:
        return {}, {}
    summary = {f"{name}_accuracy": round(sum(v for v in values if not math.isnan(v)) / len(scored), 4)
               for name, values in per_example.items()}
    summary["tool_call_examples"] = len(scored)
    return summary, per_example
