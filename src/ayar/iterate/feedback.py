"""Feedback rows become training records: corrections, preference pairs and ratings; then dedup and hold-out."""

from __future__ import annotations

import hashlib
import math
import random
import re
from typing import Any

from ayar.errors import UsageError

Records = dict[str, list[dict[str, Any]]]  # "sft" (corrections), "pairs" (chosen, rejected), "kto" (ratings)


def normalised(text: str) -> str:
    """Lower case with runs of whitespace as one space: two texts that differ only so are the same text."""
    return re.sub(r"\s+", " ", text).strip().lower()


def _rated_pairs(row: dict[str, Any], source: dict[str, Any], skipped: dict[str, int]) -> list[dict[str, Any]]:
    """The preference pairs one feedback row gives: its correction over the served answer (unless rated up),
    and the completion the user preferred over it."""
    prompt, served, correction = row["prompt"], row["completion"], row["correction"]
    pairs = []
    if correction and row["rating"] != "up" and normalised(correction) != normalised(served):
        pairs.append({**source, "prompt": prompt, "chosen": correction, "rejected": served})
    if row["preferred_id"]:
        if row["preferred"] and row.get("preferred_prompt") != prompt:
            skipped["preferred_other_prompt"] += 1  # an answer to another question is no alternative
        elif row["preferred"] and normalised(row["preferred"]) != normalised(served):
            pairs.append({**source, "prompt": prompt, "chosen": row["preferred"], "rejected": served})
        elif not row["preferred"]:
            skipped["preferred_without_text"] += 1
    return pairs


def feedback_records(rows: list[dict[str, Any]]) -> tuple[Records, dict[str, int]]:
    """SFT records, preference pairs and KTO records from feedback rows; counts of what could not be used.

    ``rows``: as ``ayar.serve.logging_db.read_feedback`` returns them.
    """
    out: Records = {"sft": [], "pairs": [], "kto": []}
    skipped = {"no_text": 0, "correction_without_text": 0, "preferred_without_text": 0,
               "preferred_other_prompt": 0}
    for row in rows:
        prompt, served = row["prompt"], row["completion"]
        if not prompt or served is None:
            skipped["no_text"] += 1  # served without --log-text: nothing to learn from but the count
            continue
        source = {"feedback_id": row["feedback_id"], "completion_id": row["completion_id"]}
        correction = row["correction"]
        if row["correction_chars"] and not correction:
            skipped["correction_without_text"] += 1
        if correction:
            out["sft"].append({**source, "instruction": prompt, "output": correction})
        out["pairs"] += _rated_pairs(row, source, skipped)
        if row["rating"] and not correction and not row["preferred_id"]:
            out["kto"].append({**source, "prompt": prompt, "completion": served, "label": row["rating"] == "up"})
    return out, skipped


def record_prompt(record: dict[str, Any]) -> str | None:
    """The user-side text of a training or test record of any format, as the server logs a prompt."""
    from ayar.data.templates import record_to_messages

    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    if isinstance(record.get("prompt"), list):
        return "\n".join(m["content"] for m in record["prompt"] if m.get("role") == "user")
    try:
        messages = record_to_messages({**record, "output": record.get("output", "")})
    except (KeyError, TypeError, UsageError):
        return record.get("text") if isinstance(record.get("text"), str) else None
    users = [m["content"] for m in messages if m["role"] == "user"]
    return "\n".join(users) or None


def _answer(record: dict[str, Any]) -> str:
    value = record.get("output", record.get("chosen", record.get("completion", "")))
    return value[-1]["content"] if isinstance(value, list) and value else str(value)


def _key(kind: str, record: dict[str, Any]) -> tuple[str, ...]:
    prompt = normalised(record_prompt(record) or "")
    if kind == "pairs":
        return (kind, prompt, normalised(record["chosen"]), normalised(record["rejected"]))
    if kind == "kto":
        return (kind, prompt, normalised(record["completion"]), str(record["label"]))
    return ("sft", prompt, normalised(_answer(record)))


def deduplicate(records: Records, train: list[dict[str, Any]], test: list[dict[str, Any]]
                ) -> tuple[Records, dict[str, int]]:
    """Drop records whose prompt is in the test split, that repeat a training record, or that repeat each other."""
    test_prompts = {normalised(p) for p in (record_prompt(r) for r in test) if p}
    seen = {("sft", normalised(record_prompt(r) or ""), normalised(_answer(r))) for r in train}
    seen |= {_key("pairs", r) for r in train if "chosen" in r and "rejected" in r}
    dropped = {"test_prompt": 0, "in_training_data": 0, "repeated": 0}
    kept: Records = {kind: [] for kind in records}
    own: set[tuple[str, ...]] = set()
    for kind, items in records.items():
        for record in items:
            key = _key(kind, record)
            if key[1] in test_prompts:
                dropped["test_prompt"] += 1
            elif key in seen:
                dropped["in_training_data"] += 1
            elif key in own:
                dropped["repeated"] += 1
            else:
                own.add(key)
                kept[kind].append(record)
    return kept, dropped


def hold_out(records: Records, share: float, seed: int) -> tuple[Records, Records]:
    """(train, held-out): whole prompts go to one side, chosen by a seeded hash so reruns agree."""
    prompts = sorted({normalised(record_prompt(r) or "") for items in records.values() for r in items},
                     key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    held = set(prompts[:math.ceil(share * len(prompts))]) if share > 0 and len(prompts) > 1 else set()
    train = {k: [r for r in v if normalised(record_prompt(r) or "") not in held] for k, v in records.items()}
    test = {k: [r for r in v if normalised(record_prompt(r) or "") in held] for k, v in records.items()}
    return train, test


def replay_records(v1_train: list[dict[str, Any]], feedback_count: int, share: float, seed: int
                   ) -> list[dict[str, Any]]:
    """A seeded sample of v1's training records, ``share`` of v2's rows beside ``feedback_count`` feedback rows.

    Training v2 on feedback alone moved the quickstart's model off what v1 had learned (test exact match
    51% -> 39% after 24 steps on 233 corrections, most of them a task v1 never saw); replaying v1's own data
    is the usual guard against that forgetting.
    """
    if share <= 0 or not v1_train:
        return []
    wanted = min(len(v1_train), round(share / (1 - share) * feedback_count))
    return random.Random(seed).sample(v1_train, wanted)
