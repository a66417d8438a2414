"""Token-weighted perplexity: over response tokens for chat data, sliding windows for long texts."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ayar.data.tokenize import IGNORE_INDEX


@torch.inference_mode()
def _nll_sum(model: Any, input_ids: list[int], labels: list[int]) -> tuple[float, int]:
    """Summed negative log-likelihood of the labelled tokens of one sequence, and how many there were."""
    ids = torch.tensor([input_ids], device=model.device)
    target = torch.tensor([labels[1:]], device=model.device)  # token t is predicted from tokens < t
    logits = model(input_ids=ids).logits
    # Prompt tuning and p-tuning return the logits of their virtual tokens first: keep the real tokens'.
    logits = logits[:, logits.shape[1] - ids.shape[1]:-1].float()
    loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="sum")
    return float(loss), int((target != IGNORE_INDEX).sum())


def sliding_window_pieces(
    input_ids: list[int], labels: list[int], context: int, stride: int
) -> list[tuple[list[int], list[int]]]:
    """Split a long sequence into windows of ``context`` tokens, each scoring only tokens not scored before."""
    if len(input_ids) <= context:
        return [(input_ids, labels)]
    pieces = []
    scored_to = 0  # every label before this index has been counted
    for start in range(0, len(input_ids), stride):
        end = min(start + context, len(input_ids))
        window_labels = [IGNORE_INDEX if start + i < max(scored_to, start + 1) else lab
                         for i, lab in enumerate(labels[start:end])]
        pieces.append((input_ids[start:end], window_labels))
        scored_to = end
        if end == len(input_ids):
            break
    return pieces


def perplexity(model: Any, examples: list[dict[str, list[int]]], context: int, stride: int | None = None) -> dict:
    """Perplexity over all labelled tokens of the examples (token-weighted, not averaged per example)."""
    model.eval()
    total_nll, total_tokens = 0.0, 0
    per_example, per_example_tokens = [], []
    for example in examples:
        pieces = sliding_window_pieces(example["input_ids"], example["labels"], context, stride or context)
        nll, count = 0.0, 0
        for ids, labels in pieces:
            piece_nll, piece_count = _nll_sum(model, ids, labels)
            nll, count = nll + piece_nll, count + piece_count
        per_example.append(nll / count if count else math.nan)
        per_example_tokens.append(count)
        total_nll, total_tokens = total_nll + nll, total_tokens + count
    mean_nll = total_nll / total_tokens if total_tokens else math.nan
    return {"perplexity": math.exp(mean_nll), "nll": mean_nll, "tokens": total_tokens,
            "per_example_nll": per_example, "per_example_tokens": per_example_tokens}
