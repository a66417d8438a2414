"""A batch's shared opening run once: the cached forward that scoring, generation and training share.

Evaluation asks a chat model many short questions in one template, and the template's system prompt is
most of each prompt's tokens (24 of SmolLM2's 37 for "What is the capital of France?"). Running the
common opening once and handing its keys and values to every row computes what the padded batch
computes, with a fraction of the work. Nothing here is specific to a model family: rows continue a
cache at explicit positions, behind an attention mask that hides each row's padding.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ayar.models.load import unwrapped

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


def drops_out(model: Any) -> bool:
    """Whether the model, in training, drops activations out: one opening for all rows would draw one dropout
    mask for all of them, where the padded batch draws one a row."""
    if not model.training:
        return False
    config = getattr(unwrapped(model), "config", None)
    if any(getattr(config, name, 0) or 0 for name in ("attention_dropout", "attn_pdrop", "hidden_dropout")):
        return True
    return any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules())


def common_opening(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many leading positions hold the same real token in every row of a batch: there, a causal model's
    outputs are the same in every row."""
    same = ((input_ids == input_ids[:1]) & (attention_mask == 1)).all(dim=0)
    return int(same.long().cumprod(0).sum())


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


def forward_with_shared_opening(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
    """The model's output (``.logits``: logits, or hidden states under ``hidden_states_as_logits``) on a
    right-padded batch, every row's tokens at their own positions; where the rows open alike, the opening
    runs once, with gradients, and its keys and values serve every row. Exact: the opening's outputs are the
    same in every row, and its gradients sum over them. Runs the batch whole where nothing is shared."""
    rows = input_ids.shape[0]
    right_padded_rows = bool((attention_mask[:, :-1] >= attention_mask[:, 1:]).all())
    # each row keeps a token of its own
    shared = min(common_opening(input_ids, attention_mask), int(attention_mask.sum(dim=1).min()) - 1)
    if (rows < 2 or not right_padded_rows or shared < MIN_SHARED_TOKENS or is_prompt_learning(model)
            or drops_out(model)):
        return model(input_ids=input_ids, attention_mask=attention_mask)
    first = model(input_ids=input_ids[:1, :shared], use_cache=True)
    if not hasattr(first.past_key_values, "batch_repeat_interleave"):
        return model(input_ids=input_ids, attention_mask=attention_mask)
    first.past_key_values.batch_repeat_interleave(rows)
    positions = torch.arange(shared, input_ids.shape[1], device=input_ids.device).expand(rows, -1)
    rest = model(input_ids=input_ids[:, shared:], attention_mask=attention_mask, position_ids=positions,
                 past_key_values=first.past_key_values, use_cache=True)
    rest.logits = torch.cat([first.logits.expand(rows, -1, -1), rest.logits], dim=1)
    return rest
