"""Token-weighted perplexity: over response tokens for chat data, sliding windows for long texts."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ayar.data.tokenize import IGNORE_INDEX
from ayar.models import opening
from ayar.models.heads import hidden_states_as_logits, output_layer
from ayar.models.load import unwrapped

# Logit elements per forward (tokens x vocabulary, fp32): 512 MB, about 2,700 tokens of a 49k vocabulary.
_LOGIT_BUDGET = 2**27
# Prompts per forward of continuation_nll_sums (each with its continuations: four options, say)
_SHARED_PROMPTS = 32


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


@torch.inference_mode()
def continuation_nll_sums(model: Any, prompts: list[list[int]],
                          continuations: list[list[list[int]]]) -> list[list[tuple[float, int]]]:
    """(summed negative log-likelihood, token count) of each continuation after its prompt, per prompt.

    The prompt is run once and its keys and values serve all of its continuations: multiple choice scores
    four options of a few tokens after one long chat prompt, and running the prompt four times was most
    of the work. Models that put virtual tokens before the prompt (prompt learning), or whose logits are
    not a plain output layer's, score each prompt + continuation whole (``nll_sums``).
    """
    head = output_layer(unwrapped(model))
    if head is None or opening.is_prompt_learning(model):
        flat = [(p + c, [IGNORE_INDEX] * len(p) + c) for p, options in zip(prompts, continuations, strict=True)
                for c in options]
        sums = iter(nll_sums(model, flat))
        return [[next(sums) for _ in options] for options in continuations]
    results: list[list[tuple[float, int]]] = [[] for _ in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
    for start in range(0, len(order), _SHARED_PROMPTS):
        batch = order[start:start + _SHARED_PROMPTS]
        scored = _shared_prompt_batch(model, head, [prompts[i] for i in batch], [continuations[i] for i in batch])
        for index, sums in zip(batch, scored, strict=True):
            results[index] = sums
    return results


def _opened(model: Any, rows: list[list[int]], shared: int) -> tuple[Any, torch.Tensor | None, torch.Tensor | None]:
    """(cache, its mask, the output at its last token) of the rows' first ``shared`` tokens, run once; Nones
    where nothing is shared (or the model's cache cannot be copied)."""
    opened = opening.opening_cache(model, rows[0][:shared], len(rows)) if shared >= opening.MIN_SHARED_TOKENS else None
    return opened if opened is not None else (None, None, None)


def _shared_prompt_batch(model: Any, head: tuple[Any, str, Any], prompts: list[list[int]],
                         continuations: list[list[list[int]]]) -> list[list[tuple[float, int]]]:
    """One batch of ``continuation_nll_sums``: the prompts' common opening once, the prompts' rest once each,
    then every continuation at once on its prompt's copy of the cache, right after its prompt's last token."""
    parent, attribute, layer = head
    with hidden_states_as_logits(parent, attribute):
        shared = opening.shared_opening(prompts)
        cache, mask, _ = _opened(model, prompts, shared)
        shared = shared if cache is not None else 0
        rests = opening.continue_rows(model, [p[shared:] for p in prompts], cache, mask, shared)
        lengths = rests.rows_mask.sum(dim=1)
        owner = torch.tensor([i for i, options in enumerate(continuations) for _ in options], device=model.device)
        rests.cache.batch_select_indices(owner)
        flat_options = [c for options in continuations for c in options]
        options = opening.continue_rows(model, flat_options, rests.cache, rests.mask[owner], (shared + lengths)[owner])
    last_prompt = rests.output[torch.arange(len(prompts), device=model.device), lengths - 1]
    # token j of a continuation is predicted at its token j - 1, the first one at the prompt's last token
    predictors = torch.cat([last_prompt[owner, None], options.output[:, :-1]], dim=1)
    option_ids, option_mask = opening.right_padded(flat_options, model.device)
    sums = iter(_summed_losses(layer, predictors, option_ids.masked_fill(option_mask == 0, IGNORE_INDEX)))
    return [[next(sums) for _ in group] for group in continuations]


def _summed_losses(layer: Any, predictors: torch.Tensor, targets: torch.Tensor) -> list[tuple[float, int]]:
    """(summed cross-entropy, count) per row of the targets that are not IGNORE_INDEX, the output layer
    applied to their predictors only."""
    scored = targets != IGNORE_INDEX
    losses = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
    losses[scored] = F.cross_entropy(layer(predictors[scored]).float(), targets[scored], reduction="none")
    return [(float(n), int(c)) for n, c in zip(losses.sum(dim=1), scored.sum(dim=1), strict=True)]


def _padded_batch_nll(model: Any, pieces: list[tuple[list[int], list[int]]],
                      width: int) -> list[tuple[float, int]]:
    head = output_layer(unwrapped(model))
    if head is None or opening.is_prompt_learning(model):
        return _full_logits_nll(model, pieces, width)
    rows = [ids for ids, _ in pieces]
    labels = [labels + [IGNORE_INDEX] * (len(ids) - len(labels)) for ids, labels in pieces]
    # an opening is shared up to the first scored token at most: the tokens it predicts are not scored
    first_scored = min(next((k for k, x in enumerate(row) if x != IGNORE_INDEX), len(row)) for row in labels)
    parent, attribute, layer = head
    with hidden_states_as_logits(parent, attribute):
        shared = min(opening.shared_opening(rows), first_scored)
        cache, mask, opening_last = _opened(model, rows, shared)
        shared = shared if cache is not None else 0
        rests = opening.continue_rows(model, [row[shared:] for row in rows], cache, mask, shared)
    # token t is predicted from tokens < t: the rest's first token from the opening's last
    predictors = rests.output[:, :-1] if cache is None else torch.cat([opening_last[:, None], rests.output[:, :-1]], 1)
    start = shared if cache is not None else 1
    targets = torch.full(predictors.shape[:2], IGNORE_INDEX, dtype=torch.long)
    for i, row in enumerate(labels):
        scored = row[start:start + targets.shape[1]]
        targets[i, :len(scored)] = torch.tensor(scored, dtype=torch.long)
    return _summed_losses(layer, predictors, targets.to(model.device))


def _full_logits_nll(model: Any, pieces: list[tuple[list[int], list[int]]], width: int) -> list[tuple[float, int]]:
    """``_padded_batch_nll`` through the model's own logits, every token's."""
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
