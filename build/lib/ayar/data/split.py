"""Seeded train/validation/test splits: optionally stratified by a field, or grouped by a key."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Hashable, Sequence
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


def _key(value: Any) -> Hashable:
    return value if isinstance(value, Hashable) else repr(value)


def assign_splits(
    n: int,
    fractions: tuple[float, float, float],
    seed: int,
    strata: Sequence[Any] | None = None,
    groups: Sequence[Any] | None = None,
) -> bytearray:
    """The split (0 train, 1 validation, 2 test) of each of ``n`` records, by index.

    With ``groups``, whole groups are assigned (no group crosses splits). With ``strata``, each
    value is split with the same fractions. Only indices and keys are held, so a million records
    cost a few tens of MB.
    """
    rng = random.Random(seed)
    out = bytearray(n)
    members: dict[Hashable, list[int]] = defaultdict(list)
    labels = groups if groups is not None else strata
    for index in range(n):
        members[_key(labels[index]) if labels is not None else None].append(index)
    keys = sorted(members, key=repr)
    if groups is not None:
        rng.shuffle(keys)
        for split_index, part in enumerate(_cut(keys, fractions).values()):
            for key in part:
                for index in members[key]:
                    out[index] = split_index
        return out
    for key in keys:
        indices = members[key]
        rng.shuffle(indices)
        for split_index, part in enumerate(_cut(indices, fractions).values()):
            for index in part:
                out[index] = split_index
    return out


def split_records(
    records: list[dict[str, Any]],
    fractions: tuple[float, float, float],
    seed: int,
    stratify_by: str | None = None,
    group_by: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Split records three ways, keeping their order; every record lands in exactly one split."""
    strata = [r.get(stratify_by) for r in records] if stratify_by else None
    groups = [r.get(group_by) for r in records] if group_by else None
    assignment = assign_splits(len(records), fractions, seed, strata, groups)
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for record, split_index in zip(records, assignment, strict=True):
        out[SPLITS[split_index]].append(record)
    return out
