"""Text metrics. Exact match here; BLEU/chrF/ROUGE come from sacrebleu and rouge-score."""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")


def normalize_answer(text: str, steps: Iterable[str]) -> str:
    """Apply exact-match normalisation steps in a fixed order."""
    steps = set(steps)
    if "strip_punct" in steps:
        text = _PUNCT.sub("", text)
    if "lower" in steps:
        text = text.lower()
    if "collapse_whitespace" in steps:
        text = " ".join(text.split())
    if "strip" in steps:
        text = text.strip()
    return text


def exact_match(predictions: list[str], references: list[str], normalize: Iterable[str] = ("strip",)) -> list[float]:
    """1.0 where the normalised prediction equals the normalised reference, else 0.0."""
    steps = list(normalize)
    return [float(normalize_answer(p, steps) == normalize_answer(r, steps)) for p, r in zip(predictions, references,
                                                                                           strict=True)]
