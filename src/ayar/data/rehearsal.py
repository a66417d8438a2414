"""Rehearsal data: general instructions whose answers the base model writes itself (``data.rehearsal``).

A fine-tune on one narrow task drifts the model's general behaviour (the quickstart's tuned model
started answering every question in a word or two). Mixing the base model's own greedy answers to
general instructions into training pulls it back: the loss on those rows is near zero where the model
has not drifted and grows where it has. This module reads the prompts and holds the mixing arithmetic;
the answers are generated at prepare time by ``ayar.eval.rehearsal`` (it needs the model).

The built-in prompts (package data, ``prompt_data/general_prompts.jsonl``) are general requests of
many kinds, in English and Turkish (about 60/40), most of them inviting an answer of a sentence or two,
since answers the model does not finish within the rehearsal's token budget are dropped. None of them
is, or asks about the subject of, one of the forgetting report's probe questions (``ayar.eval.forgetting``),
so the report still measures material the fine-tune never saw; a test checks it, and prompts from a
user's file that match a probe are dropped at prepare time.
"""

from __future__ import annotations

import functools
import json
import math
import re
from importlib import resources
from pathlib import Path
from typing import Any

from ayar.errors import UsageError
from ayar.recipe import RehearsalConfig

REHEARSAL_FILE = "rehearsal.jsonl"
REHEARSAL_TASK = "rehearsal"  # the records' ``task`` field: never a task of the held-out evaluation

PROMPTS_FILE = "prompt_data/general_prompts.jsonl"  # one {"lang", "topic", "instruction"} object a line


@functools.cache
def builtin_prompts() -> tuple[str, ...]:
    """The built-in general instructions, in the data file's order (read on first use, then kept)."""
    text = resources.files("ayar.data").joinpath(PROMPTS_FILE).read_text(encoding="utf-8")
    return tuple(json.loads(line)["instruction"] for line in text.splitlines() if line.strip())


def __getattr__(name: str) -> Any:
    # BUILTIN_PROMPTS reads as a constant but loads the data file only when someone asks for it.
    if name == "BUILTIN_PROMPTS":
        return builtin_prompts()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def load_prompts(cfg: RehearsalConfig) -> list[tuple[str, str | None]]:
    """(instruction, answer or None) for each rehearsal prompt the recipe names: the built-in set, or a
    .txt / .jsonl file. A .jsonl row with an ``output`` carries the base model's answer, written beforehand
    (``python -m ayar.eval.rehearsal``), so prepare does not generate it again."""
    pairs = [(p, None) for p in builtin_prompts()] if cfg.prompts == "builtin" else _read_prompt_file(Path(cfg.prompts))
    unique: dict[str, str | None] = {}
    for prompt, answer in pairs:
        if prompt.strip() and prompt.strip() not in unique:
            unique[prompt.strip()] = answer.strip() if answer else None
    if not unique:
        raise UsageError(f"data.rehearsal.prompts: {cfg.prompts} holds no instruction")
    return list(unique.items())[: cfg.max_prompts] if cfg.max_prompts else list(unique.items())


def _read_prompt_file(path: Path) -> list[tuple[str, str | None]]:
    if not path.is_file():
        raise UsageError(f"data.rehearsal.prompts: file {path} does not exist (or use 'builtin')")
    lines = path.read_text(encoding="utf-8").splitlines()
    if path.suffix == ".txt":
        return [(line, None) for line in lines]
    if path.suffix != ".jsonl":
        raise UsageError(f"data.rehearsal.prompts: {path} must be .txt (one instruction a line) or .jsonl")
    pairs = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"data.rehearsal.prompts: {path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("instruction"), str):
            raise UsageError(f"data.rehearsal.prompts: {path}:{number}: needs a string field 'instruction'")
        answer = row.get("output")
        if answer is not None and not isinstance(answer, str):
            raise UsageError(f"data.rehearsal.prompts: {path}:{number}: 'output' must be a string")
        pairs.append((row["instruction"], answer))
    return pairs


# Words that carry no subject: two prompts that share only these are not the same question.
FUNCTION_WORDS = frozenset(
    ["a", "an", "and", "are", "as", "at", "be", "by", "can", "could", "do", "does", "for", "from", "give", "how", "i", "in", "is", "it", "its", "me", "my", "name", "of", "on", "one", "or", "please", "s", "tell", "that", "the", "there", "this", "to", "was", "what", "which", "who", "why", "with", "would", "you", "your", "bir", "bu", "da", "de", "için", "mi", "mı", "mu", "mü", "ne", "nedir", "nasıl", "ve", "ya"])


def content_words(text: str) -> set[str]:
    """The lower-cased words of a text, function words left out (for comparing prompts by subject)."""
    return set(re.findall(r"\w+", text.lower())) - FUNCTION_WORDS


def similarity(a: str, b: str) -> float:
    """Jaccard similarity of two texts' content-word sets (1.0 when both have none)."""
    wa, wb = content_words(a), content_words(b)
    return len(wa & wb) / len(wa | wb) if wa | wb else 1.0


def repeats_for_share(answered: int, train_records: int, share: float) -> int:
    """How many times each of ``answered`` rehearsal records appears so that rehearsal is about ``share``
    of the training examples (at least once)."""
    if answered == 0:
        return 0
    wanted = share / (1 - share) * train_records
    return max(1, math.ceil(wanted / answered - 1e-9))


def rehearsal_records(prompts: list[str], answers: list[str], repeats: int) -> list[dict[str, Any]]:
    """Alpaca records (task ``rehearsal``), each pair ``repeats`` times, interleaved."""
    pairs = [{"instruction": p, "output": a, "task": REHEARSAL_TASK}
             for p, a in zip(prompts, answers, strict=True)]
    return [dict(r) for _ in range(repeats) for r in pairs]
