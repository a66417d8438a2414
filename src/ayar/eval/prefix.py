"""A batch's shared opening run once: the cached forward that evaluation's scoring and generation share.

Evaluation asks a chat model many short questions in one template, and the template's system prompt is
most of each prompt's tokens (24 of SmolLM2's 37 for "What is the capital of France?"). Running the
common opening once and handing its keys and values to every row computes what the padded batch
computes, with a fraction of the work. Nothing here is specific to a model family: rows continue a
cache at explicit positions, behind an attention mask that hides each row's padding.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

# Below this many shared leading tokens a batch runs whole: the cache is not worth its copies
MIN_SHARED_TOKENS = 8


class Continued(NamedTuple):
    """One cached forward: its output (hidden states or logits), the cache, and the attention mask over the
    cache and these rows (``mask``) and over these rows alone (``rows_mask``)."""

    output: torch.Tensor
    cache: Any
    mask: torch.Tensor
    rows_mask: torch.Tensor


def shared_opening(rows: list[list[int]]) -> int:
    """How many leading tokens every row has in common, leaving each row at least its last token to run."""
    if not rows or min(map(len, rows)) < 2:
        return 0
    for i in range(min(map(len, rows)) - 1):
        if any(row[i] != rows[0][i] for row in rows):
            return i
    return min(map(len, rows)) - 1


def is_prompt_learning(model: Any) -> bool:
    """Prompt tuning and p-tuning put virtual tokens before the input: a cache of the text alone misses them."""
    return bool(getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False))


def right_padded(rows: list[list[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and attention mask of the rows, right-padded to the longest."""
    ids = torch.zeros((len(rows), max(map(len, rows))), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row, dtype=torch.long), 1
    return ids.to(device), mask.to(device)


def continue_rows(model: Any, rows: list[list[int]], cache: Any = None, cache_mask: torch.Tensor | None = None,
                  offsets: torch.Tensor | int = 0) -> Continued:
    """The rows (right-padded) run after ``cache``, row i from position ``offsets[i]``; no cache: from 0."""
    ids, rows_mask = right_padded(rows, model.device)
    mask = rows_mask if cache_mask is None else torch.cat([cache_mask, rows_mask], dim=1)
    positions = None
    if cache is not None:
        start = torch.as_tensor(offsets, device=model.device).reshape(-1, 1)
        positions = (start + torch.arange(ids.shape[1], device=model.device)).expand(len(rows), -1)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    return Continued(out.logits, out.past_key_values, mask, rows_mask)


def opening_cache(model: Any, opening: list[int], copies: int) -> tuple[Any, torch.Tensor, torch.Tensor] | None:
    """(cache, attention mask, output at the opening's last token) of the opening, once per row; None where
    the model's cache cannot be copied across a batch."""
    run = continue_rows(model, [opening])
    if not hasattr(run.cache, "batch_repeat_interleave"):
        return None
    run.cache.batch_repeat_interleave(copies)
    return run.cache, run.mask.expand(copies, -1), run.output[:, -1].expand(copies, -1)
