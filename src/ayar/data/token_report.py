"""What the data card reports in tokens: the training records' lengths with the target tokenizer, and
per role how many of their tokens the loss mask lets the model learn."""

from __future__ import annotations

import json
from collections import Counter
from itertools import islice
from typing import Any

import numpy as np

from ayar.data.prepared import PreparedData
from ayar.data.record_processor import load_tokenizer
from ayar.data.shapes import CHAT_FORMATS, record_texts
from ayar.recipe import DataConfig


def token_stats(prepared: PreparedData, tokenizer: str, cfg: DataConfig, limit: int = 2000) -> dict[str, Any]:
    """Token counts of (up to ``limit``) training records with the target tokenizer, in batches."""
    tok = load_tokenizer(tokenizer)
    texts: list[str] = []
    with prepared.split_path("train").open(encoding="utf-8") as f:
        for line in islice(f, limit):
            record = json.loads(line)
            texts.append("\n".join(record_texts(record, record_format(record, cfg.format))))
    if not texts:
        return {}
    lengths = np.array([len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]])
    return {"tokenizer": tokenizer, "records_measured": len(texts), "mean": round(float(lengths.mean()), 1),
            "p50": float(np.percentile(lengths, 50)), "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()), "total_measured": int(lengths.sum()),
            "over_max_length": int((lengths > cfg.max_length).sum()), "max_length": cfg.max_length}


def loss_mask_report(prepared: PreparedData, tokenizer: str, cfg: DataConfig, limit: int = 2000) -> dict[str, Any]:
    """Per role, how many tokens (up to ``limit``) training records hold and how many are learned."""
    from ayar.data.reasoning import reasoning_mode
    from ayar.data.templates import record_to_messages, record_tools, set_template
    from ayar.data.tokenize import IGNORE_INDEX, count_mask, tokenize_conversation

    tok = load_tokenizer(tokenizer)
    set_template(tok, cfg.template, cfg.enable_thinking)
    counts: dict[str, Counter] = {"tokens": Counter(), "learned": Counter()}
    measured = without = 0
    with prepared.split_path("train").open(encoding="utf-8") as f:
        for line in islice(f, limit):
            record = json.loads(line)
            if record_format(record, cfg.format) not in CHAT_FORMATS:
                continue
            try:
                encoded = tokenize_conversation(tok, record_to_messages(record, cfg.system_prompt), cfg.max_length,
                                                cfg.mask_prompt, record_tools(record),
                                                reasoning_mode(cfg.reasoning, cfg.enable_thinking), with_roles=True)
            except ValueError as exc:  # a template that does not render conversations as prefixes
                return {"records_measured": 0, "roles": {}, "learned_tokens": 0, "note": str(exc)}
            count_mask(encoded, counts)
            measured += 1
            without += all(label == IGNORE_INDEX for label in encoded["labels"])
    roles = {role: {"tokens": counts["tokens"][role], "learned": counts["learned"][role]}
             for role in sorted(counts["tokens"])}
    return {"tokenizer": tokenizer, "template": cfg.template, "records_measured": measured, "roles": roles,
            "learned_tokens": sum(counts["learned"].values()), "records_without_learned_tokens": without}


def record_format(record: dict[str, Any], default: str) -> str:
    if "messages" in record:
        return "messages"
    return "sharegpt" if "conversations" in record else default
