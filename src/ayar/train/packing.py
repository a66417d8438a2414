"""Packing: several short examples share one row, with attention that never crosses an example.

Each example's ``position_ids`` restart at 0 and no 2D ``attention_mask`` is sent. transformers
(5.x, ``masking_utils.find_packed_sequence_indices``) reads the restarts and builds a block-diagonal
causal mask for the sdpa/eager/flex backends; the flash-attention backends take the same restarts as
varlen boundaries (``cu_seqlens``) when the batch is one flattened row (``flatten=True``). The first
label of every example is dropped, so no example learns to predict from the one before it.

The cache must be off (``use_cache=False``, the Trainer's default): with a cache, transformers
skips the packed-sequence detection. Packing is done per batch (the sampler's examples, in the sampler's order), so the optimizer sees
exactly the examples and steps of the unpacked run: what is learned does not change, only the
padding that is computed goes away. transformers' ``DataCollatorWithFlattening`` only flattens into
one row, which on a CPU costs attention over the whole batch; rows of bounded length are what is
written here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ayar.data.tokenize import IGNORE_INDEX
from ayar.errors import UsageError
from ayar.tasks import get_task, tasks_where
from ayar.train.attention import NAME as SHORT_ROWS_ATTENTION
from ayar.train.tasks import collator_for


def pack_bins(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Group example indices into rows of at most ``capacity`` tokens (first-fit decreasing).

    Within a row the examples keep their original order. An example longer than ``capacity``
    gets a row of its own (the caller picks a capacity at least the longest example).
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    rows: list[list[int]] = []
    free: list[int] = []
    for index in order:
        size = lengths[index]
        slot = next((r for r, room in enumerate(free) if room >= size), None)
        if slot is None:
            rows.append([index])
            free.append(capacity - size)
        else:
            rows[slot].append(index)
            free[slot] -= size
    return [sorted(row) for row in rows]


class PackingCollator:
    """Packs a batch of tokenized causal-LM examples into rows with per-example position ids.

    Args:
        pad_token_id: id written into the unused tail of a row (its labels are ignored).
        pack_length: row capacity in tokens; None packs into rows as long as the batch's longest
            example, so no row is longer than the unpacked batch's padded length.
        flatten: one row for the whole batch (the varlen path of flash-attention backends).
        pad_to_multiple_of: round the row length up (tensor-core friendly shapes on a GPU).
        unpacked: the plain padding collator, for a batch in which no two examples fit one row: it gives
            the same rows without a block-diagonal mask, which costs time for nothing (measured in
            docs/performance.md, "Packing is the default").
    """

    def __init__(self, pad_token_id: int, pack_length: int | None = None, flatten: bool = False,
                 pad_to_multiple_of: int | None = None, unpacked: Any = None) -> None:
        if pack_length is not None and pack_length < 1:
            raise UsageError(f"pack_length must be positive, got {pack_length}")
        self.pad_token_id = pad_token_id
        self.pack_length = pack_length
        self.flatten = flatten
        self.pad_to_multiple_of = pad_to_multiple_of
        self.unpacked = unpacked

    def rows_for(self, lengths: list[int]) -> list[list[int]]:
        """Which examples (by index into the batch) share each row."""
        if self.flatten:
            return [list(range(len(lengths)))]
        return pack_bins(lengths, max(self.pack_length or 0, max(lengths)))

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not features:
            raise ValueError("an empty batch cannot be packed")
        ids = [list(f["input_ids"]) for f in features]
        labels = [list(f["labels"]) if "labels" in f else list(f["input_ids"]) for f in features]
        rows = self.rows_for([len(x) for x in ids])
        if self.unpacked is not None and len(rows) == len(features):
            return self.unpacked(features)
        width = max(sum(len(ids[i]) for i in row) for row in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        batch_labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        for r, row in enumerate(rows):
            start = 0
            for i in row:
                n = len(ids[i])
                batch_ids[r, start:start + n] = torch.tensor(ids[i], dtype=torch.long)
                batch_labels[r, start + 1:start + n] = torch.tensor(labels[i][1:], dtype=torch.long)
                positions[r, start:start + n] = torch.arange(n)
                start += n
            # The tail restarts at 0 too: a segment of its own that no real token attends to.
            positions[r, start:] = torch.arange(width - start)
        packed = {"input_ids": batch_ids, "labels": batch_labels, "position_ids": positions}
        if all("example_index" in f for f in features):  # which examples the batch holds (fault reports, logs)
            packed["example_index"] = torch.tensor([int(f["example_index"]) for f in features])
        return packed


def padding_fraction(batch: dict[str, torch.Tensor], real_tokens: int) -> float:
    """Share of the batch's token slots that hold no example token."""
    slots = batch["input_ids"].numel()
    return 1.0 - real_tokens / slots if slots else 0.0


def packing_refusal(task: str, attn_implementation: str | None, method_inputs: Sequence[str] = (),
                    model: Any = None) -> str | None:
    """Why packing would change what is learned in this run, or None where it is safe."""
    if not get_task(task).next_token:  # a packed row is a run of next-token documents told apart by position ids
        return f"train.packing works for task {' or '.join(tasks_where('next_token'))} only, not '{task}'"
    if attn_implementation not in (None, "sdpa", "eager", "flex_attention", SHORT_ROWS_ATTENTION) and \
            not str(attn_implementation).startswith("flash_attention"):
        return (f"train.packing needs an attention backend that reads position ids (sdpa, eager, "
                f"flex_attention, flash_attention_*), not '{attn_implementation}'")
    if method_inputs:  # a packed row carries input ids, labels and position ids only
        return f"train.packing cannot carry the per-example column(s) {list(method_inputs)} the method needs"
    if getattr(getattr(model, "active_peft_config", None), "is_prompt_learning", False):
        # peft prepends virtual tokens and drops position ids, the only thing keeping packed examples apart
        return "train.packing cannot keep examples apart for a method that adds virtual tokens (prompt/prefix tuning)"
    return None


def check_packing_supported(task: str, attn_implementation: str | None, method_inputs: Sequence[str] = (),
                            model: Any = None) -> None:
    """A clear error where packing would change what is learned."""
    reason = packing_refusal(task, attn_implementation, method_inputs, model)
    if reason:
        raise UsageError(f"{reason}; set train.packing false for this run")


def resolve_packing(setting: bool | str, task: str, model: Any, method_inputs: Sequence[str] = ()
                    ) -> tuple[bool, str | None]:
    """(pack or not, why not) for ``train.packing``: ``auto`` packs wherever packing is safe; ``true`` insists."""
    if setting is False:
        return False, None
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if setting == "auto":
        reason = packing_refusal(task, attn, method_inputs, model)
        return reason is None, reason
    check_packing_supported(task, attn, method_inputs, model)
    return True, None


def collator_for_packing(recipe: Any, tokenizer: Any, model: Any = None) -> PackingCollator:
    """The packing collator for a recipe: rows up to ``train.pack_length`` (default: the batch's longest).

    Build it where ``resolve_packing`` said to pack: that is where packing's safety is decided.
    """
    attn = getattr(getattr(model, "config", None), "_attn_implementation", None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise UsageError("train.packing needs a tokenizer with a pad or eos token")
    flatten = str(attn).startswith("flash_attention")  # varlen kernels take one flattened row
    return PackingCollator(pad, pack_length=getattr(recipe.train, "pack_length", None), flatten=flatten,
                           unpacked=collator_for(recipe, tokenizer, model))
