"""Seeded train/validation/test splits: optionally stratified by a field, or grouped by a key."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

SPLITS = ("train", "validation", "test")


def _cut(items: list[Any], fractions: tuple[float, float, float]) -> dict[str, list[Any]]:
    """Cut a shuffled list into three parts by fractions, rounding so the sizes add up."""
    n = len(items)
    n_train = round(n * fractions[0])
    n_val = round(n * fractions[1])
    if n_train + n_val > n:
        n_val = n - n_train
    return {
        "train": items[:n_train],
        "validation": items[n_train : n_train + n_val],
        "test": items[n_train + n_val :],
    }


def split_records(
    records: list[dict[str, Any]],
    fractions: tuple[float, float, float],
    seed: int,
    stratify_by: str | None = None,
    group_by: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Split records three ways; every record lands in exactly one split.

    With ``group_by``, whole groups are assigned (no group crosses splits). With ``stratify_by``,
    each value of the field is split with the same fractions.
    """
    rng = random.Random(seed)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    if group_by:
        groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for record in records:
            groups[record.get(group_by)].append(record)
        keys = sorted(groups, key=repr)
        rng.shuffle(keys)
        for name, part in _cut(keys, fractions).items():
            for key in part:
                out[name].extend(groups[key])
        return out
    strata: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        strata[record.get(stratify_by) if stratify_by else None].append(record)
    for key in sorted(strata, key=repr):
        members = list(strata[key])
        rng.shuffle(members)
        for name, part in _cut(members, fractions).items():
            out[name].extend(part)
    return out
