"""Token-weighted perplexity: over response tokens for chat data, sliding windows for long texts."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ayar.data.tokenize import IGNORE_INDEX

# Logit elements per forward (tokens x vocabulary, fp32): 512 MB, about 2,700 tokens of a 49k vocabulary.
_LOGIT_BUDGET = 2**27


@torch.inference_mode()
def nll_sums(model: Any, pieces: list[tuple[list[int], list[int]]]) -> list[tuple[float, int]]:
    """(summed negative log-likelihood of the labelled tokens, their count) of every (input_ids, labels)
    piece, in right-padded batches of similar length.

    One sequence per forward left a 135M model at a fraction of the CPU's matmul speed (150 answers took
    42 s on 2 cores); batches of similar length fill it. Right padding leaves the real tokens' logits
    as they were: a causal model's token attends only to tokens before it.
    """
    results: list[tuple[float, int]] = [(0.0, 0)] * len(pieces)
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][0]), reverse=True)
    max_tokens = max(1, _LOGIT_BUDGET // model.config.get_text_config().vocab_size)
    start = 0
    while start < len(order):
        width = len(pieces[order[start]][0])
        rows = order[start:start + max(1, max_tokens // max(width, 1))]
        for index, result in zip(rows, _padded_batch_nll(model, [pieces[i] for i in rows], width), strict=True):
            results[index] = result
        start += len(rows)
    return results


def _padded_batch_nll(model: Any, pieces: list[tuple[list[int], list[int]]],
                      width: int) -> list[tuple[float, int]]:
    ids = torch.zeros((len(pieces), width), dtype=torch.long)
    mask = torch.zeros_like(ids)
    target = torch.full((len(pieces), width), IGNORE_INDEX, dtype=torch.long)
    for row, (piece_ids, piece_labels) in enumerate(pieces):
        ids[row, :len(piece_ids)] = torch.tensor(piece_ids)
        mask[row, :len(piece_ids)] = 1
        target[row, :len(piece_labels)] = torch.tensor(piece_labels)
    ids, mask, target = ids.to(model.device), mask.to(model.device), target[:, 1:].to(model.device)
    logits = model(input_ids=ids, attention_mask=mask).logits
    # Prompt tuning and p-tuning return the logits of their virtual tokens first: keep the real tokens'.
    logits = logits[:, logits.shape[1] - width:-1].float()  # token t is predicted from tokens < t
    loss = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
    counts = (target != IGNORE_INDEX).sum(dim=1)
    return [(float(n), int(c)) for n, c in zip(loss.sum(dim=1), counts, strict=True)]


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
    windows = [sliding_window_pieces(e["input_ids"], e["labels"], context, stride or context) for e in examples]
    sums = iter(nll_sums(model, [piece for pieces in windows for piece in pieces]))
    for pieces in windows:
        nll, count = 0.0, 0
        for piece_nll, piece_count in (next(sums) for _ in pieces):
            nll, count = nll + piece_nll, count + piece_count
        per_example.append(nll / count if count else math.nan)
        per_example_tokens.append(count)
        total_nll, total_tokens = total_nll + nll, total_tokens + count
    mean_nll = total_nll / total_tokens if total_tokens else math.nan
    # above ~709 nats exp overflows a float: such a model's perplexity is infinite for every purpose
    return {"perplexity": math.exp(mean_nll) if mean_nll < 700 else math.inf, "nll": mean_nll, "tokens": total_tokens,
            "per_example_nll": per_example, "per_example_tokens": per_example_tokens}
