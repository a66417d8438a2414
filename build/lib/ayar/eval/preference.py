"""Preference evaluation: does the model give the chosen answer a higher log-probability than the rejected one?

For each held-out pair the summed log-probability of the chosen and of the rejected completion given the
prompt (formatted by the chat template the model was trained with); the margin is their difference.
Preference accuracy is the share of pairs with a positive margin. TRL logs the same quantities during
training (``rewards/accuracies``); this module measures them on the test split, for base and tuned alike.
"""

from __future__ import annotations

from typing import Any

import torch

from ayar.methods.preference import to_conversational


def _completion_ids(tokenizer: Any, prompt: list[dict[str, str]], completion: list[dict[str, str]]
                    ) -> tuple[list[int], list[int]]:
    """(prompt ids, completion ids) as the chat template renders them, the prompt ending in the generation cue."""
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(prompt + completion, tokenize=False)
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    if full_text.startswith(prompt_text):
        completion_ids = tokenizer(full_text[len(prompt_text):], add_special_tokens=False)["input_ids"]
    else:  # a template that renders the last turn differently: the completion text alone
        completion_ids = tokenizer(completion[-1]["content"], add_special_tokens=False)["input_ids"]
    return prompt_ids, completion_ids


@torch.inference_mode()
def completion_logps(model: torch.nn.Module, tokenizer: Any, prompts: list[list[dict[str, str]]],
                     completions: list[list[dict[str, str]]], batch_size: int = 16, max_length: int = 512
                     ) -> list[float]:
    """The summed log-probability of each completion given its prompt."""
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out: list[float] = []
    items = [_completion_ids(tokenizer, p, c) for p, c in zip(prompts, completions, strict=True)]
    for start in range(0, len(items), batch_size):
        batch = items[start:start + batch_size]
        rows = [(p + c)[-max_length:] for p, c in batch]
        n_completion = [min(len(c), len(row) - 1) for (_, c), row in zip(batch, rows, strict=True)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):  # right padding: positions stay those of an unpadded row
            ids[i, :len(row)] = torch.tensor(row)
            mask[i, :len(row)] = 1
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
        logps = torch.log_softmax(logits[:, :-1], dim=-1)  # (batch, seq-1, vocab): position t predicts t+1
        token_logps = logps.gather(-1, ids[:, 1:].to(device).unsqueeze(-1)).squeeze(-1)
        for i, row in enumerate(rows):
            end = len(row) - 1
            out.append(float(token_logps[i, end - n_completion[i]:end].sum()))
    return out


def preference_scores(model: torch.nn.Module, tokenizer: Any, records: list[dict[str, Any]],
                      system_prompt: str | None = None, batch_size: int = 16, max_length: int = 512
                      ) -> dict[str, Any]:
    """Preference accuracy and chosen-minus-rejected log-probability margins over the pairs among ``records``."""
    pairs = [r for r in (to_conversational(x, system_prompt) for x in records) if "chosen" in r]
    if not pairs:
        return {"pairs": 0}
    prompts = [p["prompt"] for p in pairs]
    chosen = completion_logps(model, tokenizer, prompts, [p["chosen"] for p in pairs], batch_size, max_length)
    rejected = completion_logps(model, tokenizer, prompts, [p["rejected"] for p in pairs], batch_size, max_length)
    margins = [c - r for c, r in zip(chosen, rejected, strict=True)]
    return {
        "pairs": len(pairs),
        "accuracy": sum(m > 0 for m in margins) / len(margins),
        "margin_mean": sum(margins) / len(margins),
        "chosen_logp_mean": sum(chosen) / len(chosen),
        "rejected_logp_mean": sum(rejected) / len(rejected),
        "margins": margins,
    }


def instruction_records(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The preferred answer of each preference or KTO record as an instruction record (the usual metrics' reference).

    A pair gives its chosen answer; a KTO record only when labelled good.
    """
    out = []
    for record in records:
        conv = to_conversational(record)
        answer = conv.get("chosen") or (conv["completion"] if conv.get("label") else None)
        if answer is None:
            continue
        extra = {k: record[k] for k in ("id", "lang", "task") if k in record}
        prompt = record["prompt"]
        if isinstance(prompt, str) and isinstance(record.get("chosen", record.get("completion")), str):
            out.append({**extra, "instruction": prompt, "output": answer[-1]["content"]})
        else:
            out.append({**extra, "messages": conv["prompt"] + answer})
    return out
