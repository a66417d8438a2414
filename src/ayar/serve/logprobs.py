"""The model's log-probabilities of a token sequence, and their OpenAI shapes (legacy completions, chat).

Scores come from one plain forward pass over the prompt and the generated tokens, not from ``generate``'s
processed scores: temperature, top-p, repetition penalty and a grammar change what is sampled, not what the
model says, and the numbers must be the ones an evaluation harness would compute itself.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import torch

from ayar.serve.jobs import TokenLogprob

# Logit elements per forward (tokens x vocabulary, fp32), as ayar.eval.perplexity bounds them: 512 MB.
_LOGIT_BUDGET = 2**27


@torch.inference_mode()
def score_tokens(model: Any, ids: list[int], top: int) -> list[TokenLogprob]:
    """log p(ids[t] | ids[:t]) of every token, with the ``top`` most likely tokens at each position; the first
    token has none (nothing predicts it)."""
    tensor = torch.tensor([ids], dtype=torch.long, device=model.device)
    hidden = model(input_ids=tensor).logits[0]
    # Prompt tuning and p-tuning return the logits of their virtual tokens first: keep the real tokens'.
    logits = hidden[hidden.shape[0] - len(ids):-1]  # (tokens - 1, vocab): position t predicts token t + 1
    scored = [TokenLogprob(ids[0], None)]
    rows = max(1, _LOGIT_BUDGET // max(1, logits.shape[-1]))
    for start in range(0, logits.shape[0], rows):
        logp = torch.log_softmax(logits[start:start + rows].float(), dim=-1)
        targets = torch.tensor(ids[start + 1:start + 1 + logp.shape[0]], device=logp.device)
        chosen = logp.gather(1, targets.unsqueeze(1)).squeeze(1).tolist()
        values, indices = logp.topk(min(top, logp.shape[-1]), dim=-1) if top else (None, None)
        for row, (token, value) in enumerate(zip(targets.tolist(), chosen, strict=True)):
            best = list(zip(indices[row].tolist(), values[row].tolist(), strict=True)) if top else []
            scored.append(TokenLogprob(token, value, best))
    return scored


def _piece(tokenizer: Any, token: int) -> str:
    return tokenizer.decode([token])


@functools.cache
def _byte_of_char() -> dict[str, int]:
    """Byte-level BPE's printable stand-in for each byte (GPT-2's table), reversed."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in chars:
            chars[b], extra = chr(256 + extra), extra + 1
    return {c: b for b, c in chars.items()}


def _token_bytes(tokenizer: Any, token: int) -> list[int]:
    """The token's own bytes, so that a client can join the pieces of a character split over tokens (its
    decoded text reads U+FFFD there)."""
    raw = tokenizer.convert_ids_to_tokens(token) or ""
    if match := re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", raw):  # SentencePiece's byte fallback
        return [int(match.group(1), 16)]
    table = _byte_of_char()
    if raw and all(c in table for c in raw):  # byte-level BPE
        return [table[c] for c in raw]
    return list(_piece(tokenizer, token).encode("utf-8"))


def legacy_logprobs(tokenizer: Any, scored: list[TokenLogprob], start_offset: int = 0) -> dict[str, Any]:
    """OpenAI's completions shape: ``tokens``, ``token_logprobs``, ``top_logprobs`` (token text to
    log-probability; None where the token has no score) and each token's ``text_offset`` in the text."""
    tokens = [_piece(tokenizer, s.token) for s in scored]
    offsets, offset = [], start_offset
    for piece in tokens:
        offsets.append(offset)
        offset += len(piece)
    tops: list[dict[str, float] | None] = []
    for s in scored:
        if s.logprob is None:
            tops.append(None)
            continue
        top: dict[str, float] = {}
        for token, value in s.top:
            top.setdefault(_piece(tokenizer, token), value)  # two ids may read alike: the likelier one stays
        tops.append(top)
    return {"tokens": tokens, "token_logprobs": [s.logprob for s in scored], "top_logprobs": tops,
            "text_offset": offsets}


def chat_logprobs(tokenizer: Any, scored: list[TokenLogprob]) -> dict[str, Any]:
    """OpenAI's chat shape: ``{"content": [{token, logprob, bytes, top_logprobs: [...]}...]}``."""

    def entry(token: int, value: float) -> dict[str, Any]:
        return {"token": _piece(tokenizer, token), "logprob": value, "bytes": _token_bytes(tokenizer, token)}

    content = [{**entry(s.token, s.logprob if s.logprob is not None else 0.0),
                "top_logprobs": [entry(token, value) for token, value in s.top]} for s in scored]
    return {"content": content, "refusal": None}
