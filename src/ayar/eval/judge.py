"""LLM as a judge: any OpenAI-compatible endpoint scores each answer 1-10 against the reference.

A failed request or a reply without a readable score is counted, never fatal: one flaky call
must not throw away an evaluation that took an hour.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from typing import Any

from ayar.errors import UsageError

DEFAULT_RUBRIC = (
    "You are grading an assistant's answer against a reference answer.\n"
    "Question:\n{prompt}\n\nReference answer:\n{reference}\n\nAssistant's answer:\n{output}\n\n"
    "Rate how correct and complete the assistant's answer is compared with the reference, from 1 (wrong or "
    "unrelated) to 10 (equivalent to the reference). Reply with one line: 'Score: N'."
)
_SCORE = re.compile(r"score\s*[:=]?\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_NUMBER = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)(?![\d.])")


def parse_score(text: str | None) -> float | None:
    """The 1-10 score in a judge's reply ('Score: 7', or a lone number); None when there is none."""
    if not text:
        return None
    match = _SCORE.search(text)
    candidates = [match.group(1)] if match else _NUMBER.findall(text)[:1]
    for raw in candidates:
        value = float(raw)
        if 1 <= value <= 10:
            return value
    return None


@dataclass
class JudgeClient:
    """An OpenAI-compatible chat endpoint used as a grader."""

    url: str
    model: str
    api_key_env: str | None = None
    rubric: str = DEFAULT_RUBRIC
    timeout_s: float = 60.0
    max_tokens: int = 16

    def _client(self) -> Any:
        try:
            from openai import OpenAI
        except ImportError:
            raise UsageError("eval.judge needs the 'openai' package: pip install openai") from None
        key = "not-needed"
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if not key:
                raise UsageError(f"eval.judge.api_key_env names ${self.api_key_env}, which is not set")
        return OpenAI(base_url=self.url, api_key=key, timeout=self.timeout_s, max_retries=0)

    def score_all(self, prompts: list[str], references: list[str], outputs: list[str]) -> dict[str, Any]:
        """Score every answer; returns the mean over readable scores and the failure counts."""
        if "{output}" not in self.rubric:
            raise UsageError("eval.judge.rubric must contain {output} (and usually {prompt} and {reference})")
        client = self._client()
        scores: list[float | None] = []
        failed = unparsable = 0
        errors: list[str] = []
        for prompt, reference, output in zip(prompts, references, outputs, strict=True):
            message = self.rubric.format(prompt=prompt, reference=reference, output=output)
            try:
                reply = client.chat.completions.create(
                    model=self.model, messages=[{"role": "user", "content": message}],
                    temperature=0.0, max_tokens=self.max_tokens,
                )
                text = reply.choices[0].message.content
            except Exception as exc:
                failed += 1
                scores.append(None)
                if len(errors) < 3:
                    errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
                continue
            score = parse_score(text)
            unparsable += score is None
            scores.append(score)
        readable = [s for s in scores if s is not None]
        return {"model": self.model, "url": self.url, "examples": len(scores), "scored": len(readable),
                "failed": failed, "unparsable": unparsable,
                "mean_score": sum(readable) / len(readable) if readable else math.nan,
                "scores": scores, "errors": errors}
