"""Hallucination check for reference-based tasks: facts in the answer that nothing supports.

A "fact token" is a number or a capitalised word that does not start a sentence (a name, a month,
a place). One that appears in neither the prompt nor the reference was made up by the model.
"""

from __future__ import annotations

import re
from typing import Any

from ayar.eval.metrics import turkish_lower

_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_WORD = re.compile(r"\w+", re.UNICODE)
_SENTENCE_END = re.compile(r"[.!?:]\s*$")


def fact_tokens(text: str) -> list[str]:
    """Numbers and capitalised non-initial words of a text, lower-cased (Turkish rules)."""
    found = [m.group(0) for m in _NUMBER.finditer(text)]
    for match in _WORD.finditer(text):
        word = match.group(0)
        if not word[0].isupper() or word.isdigit():
            continue
        before = text[: match.start()]
        if not before.strip() or _SENTENCE_END.search(before):
            continue  # a capital at a sentence start says nothing
        found.append(word)
    return [turkish_lower(t) for t in found]


def unsupported_share(output: str, prompt: str, reference: str) -> tuple[list[str], list[str]]:
    """(fact tokens of the output, the ones found in neither prompt nor reference)."""
    facts = fact_tokens(output)
    source = turkish_lower(prompt + " " + reference)
    known = set(_WORD.findall(source)) | set(_NUMBER.findall(source))
    return facts, [t for t in facts if t not in known]


def hallucination_probe(rows: list[dict[str, Any]], top: int = 5) -> dict[str, Any]:
    """Share of unsupported fact tokens per answer, the overall rate and the worst answers."""
    scored = []
    total = unsupported_total = 0
    for row in rows:
        facts, unsupported = unsupported_share(row.get("output", ""), row.get("prompt", ""),
                                               row.get("reference", ""))
        total += len(facts)
        unsupported_total += len(unsupported)
        if facts:
            scored.append({"id": row.get("id"), "prompt": row.get("prompt", ""), "output": row.get("output", ""),
                           "reference": row.get("reference", ""), "unsupported": unsupported,
                           "share": len(unsupported) / len(facts)})
    scored.sort(key=lambda r: r["share"], reverse=True)
    return {"answers": len(rows), "answers_with_facts": len(scored),
            "answers_with_unsupported": sum(r["share"] > 0 for r in scored),
            "fact_tokens": total, "unsupported_tokens": unsupported_total,
            "unsupported_rate": unsupported_total / total if total else 0.0,
            "mean_share": sum(r["share"] for r in scored) / len(scored) if scored else 0.0,
            "worst": [r for r in scored[:top] if r["share"] > 0]}
