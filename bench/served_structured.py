"""Structured output of a real fine-tune as the official `openai` client's `chat.completions.parse` gets it: the
run's held-out prompts, Turkish and English, each answered into a pydantic model through `ayar serve`'s
grammar-constrained decoding. Counts the answers that parse and validate, and how many of the parsed
answers equal the reference (exact match, as `ayar eval` normalises it).

    .venv/bin/python bench/served_structured.py runs/quickstart
    .venv/bin/python bench/served_structured.py runs/quickstart --per-language 40 --json out.json

The server runs in this process (fastapi's test client), greedy, one request at a time.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from served_client import (  # bench/ is on sys.path when a script there runs
    held_out_conversations,
    openai_client,
)


class TaskAnswer(BaseModel):
    """What each prompt is answered into: the answer alone, bounded so a small model cannot run on."""

    answer: str = Field(max_length=80)


def held_out_prompts(run: Path, per_language: int) -> tuple[list[str], list[dict[str, Any]]]:
    """(the run's exact-match normalisation, the first ``per_language`` test records of each language as
    lang, messages and reference answer)."""
    recipe, records, conversations = held_out_conversations(run)
    cases: list[dict[str, Any]] = []
    for record, messages in zip(records, conversations, strict=True):
        if sum(c["lang"] == record.get("lang") for c in cases) < per_language:
            cases.append({"lang": record.get("lang"), "messages": messages[:-1], "reference": messages[-1]["content"]})
    return list(recipe.eval.exact_match_normalize), cases


def run_cases(run: Path, steps: list[str], cases: list[dict[str, Any]], max_tokens: int) -> dict[str, Any]:
    import openai

    from ayar.eval.metrics import exact_match

    by_language: dict[str, dict[str, int]] = {}
    started = time.perf_counter()
    with openai_client(run) as client:
        for case in cases:
            try:
                parsed = client.chat.completions.parse(model="run", messages=case["messages"], response_format=TaskAnswer,
                                                       temperature=0, max_tokens=max_tokens).choices[0].message.parsed
            except openai.LengthFinishReasonError:  # cut by max_tokens before the JSON closed
                parsed = None
            counts = by_language.setdefault(case["lang"], {"prompts": 0, "valid": 0, "exact": 0})
            counts["prompts"] += 1
            counts["valid"] += parsed is not None
            counts["exact"] += parsed is not None and exact_match([parsed.answer], [case["reference"]], steps,
                                                                  [case["lang"]])[0] == 1.0
    return {"run": str(run), "by_language": by_language, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder with a chat model")
    parser.add_argument("--per-language", type=int, default=25, help="held-out prompts per language")
    parser.add_argument("--max-tokens", type=int, default=100,
                        help="tokens per answer, the JSON included (the answer's 80 characters fit in 100)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    report = run_cases(args.run, *held_out_prompts(args.run, args.per_language), args.max_tokens)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
