"""``train.interpolate``: choose how far to move the fine-tune back toward its base (WiSE-FT), and apply it.

The change a fine-tune made is scaled by alpha (ayar.models.interpolate). ``alpha: auto`` picks it on the
**validation** split (the test split stays unseen), cheaply, with teacher-forced log-likelihoods only:

- the task score: the validation answers' loss at each alpha, as the share of the fine-tune's improvement
  over the base that alpha keeps (1 at alpha 1, 0 at the base);
- the forgetting score: the loss of the base model's own greedy answers to general questions (the forgetting
  probe's, English and Turkish), and the perplexity of the general texts, each against the base's.

The chosen alpha is the one with the least forgetting among those that keep at least ``keep`` of the task
improvement: a fine-tune's task gain is mostly kept well before alpha 1, while its drift on general text
grows all the way. The figures of every candidate go into metrics.json (``interpolate``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ayar.console import say
from ayar.data.prepare import PreparedData
from ayar.data.templates import record_to_messages, render_conversation, render_prompt
from ayar.data.tokenize import tokenize_chat
from ayar.errors import UsageError
from ayar.eval.forgetting import select_questions, text_perplexity
from ayar.eval.generate import generate_chat
from ayar.eval.perplexity import nll_sums
from ayar.models.interpolate import (
    interpolate_full,
    interpolate_state,
    is_lora_folder,
    read_weights,
    scale_adapter,
)
from ayar.models.load import load_for_inference
from ayar.recipe import InterpolateConfig, Recipe


def _mean_nll(model: Any, pieces: list[tuple[list[int], list[int]]]) -> float:
    sums = nll_sums(model, pieces)
    return sum(n for n, _ in sums) / max(1, sum(c for _, c in sums))


def task_pieces(tokenizer: Any, records: list[dict[str, Any]], recipe: Recipe) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of the validation answers as trained (prompt masked)."""
    pieces = []
    for record in records:
        encoded = tokenize_chat(tokenizer, record_to_messages(record, recipe.data.system_prompt),
                                recipe.data.max_length, mask_prompt=True)
        pieces.append((encoded["input_ids"], encoded["labels"]))
    return pieces


def general_pieces(model: Any, tokenizer: Any, cfg: InterpolateConfig, recipe: Recipe) -> list[tuple[list[int], list[int]]]:
    """(ids, labels) of the base model's own greedy answers to general probe questions (answer tokens only)."""
    questions = select_questions(cfg.questions)
    asked = [[{"role": "user", "content": q.prompt}] for q in questions]
    decoding = recipe.eval.model_copy(update={"max_new_tokens": recipe.eval.forgetting.max_new_tokens,
                                              "do_sample": False})
    answers = generate_chat(model, tokenizer, asked, decoding)
    pieces = []
    for messages, answer in zip(asked, answers, strict=True):
        prompt = tokenizer(render_prompt(tokenizer, messages), add_special_tokens=False)["input_ids"]
        text = render_conversation(tokenizer, [*messages, {"role": "assistant", "content": answer.strip()}])
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        pieces.append((ids, [-100] * len(prompt) + ids[len(prompt):]))
    return pieces


def lora_scaler(model: Any) -> Callable[[float], None]:
    """Set a loaded LoRA model's interpolation in memory (every adapted layer's scaling times alpha)."""
    from peft.tuners.lora import LoraLayer

    trained = [(layer, dict(layer.scaling)) for layer in model.modules() if isinstance(layer, LoraLayer)]

    def scale(alpha: float) -> None:
        for layer, scaling in trained:
            layer.scaling.update({name: value * alpha for name, value in scaling.items()})
    return scale


def full_scaler(model: Any, base_dir: str) -> Callable[[float], None]:
    """Set a loaded full fine-tune's interpolation in memory (base + alpha * (tuned - base))."""
    trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    base = load_for_inference(base_dir)[0].state_dict()

    def scale(alpha: float) -> None:
        model.load_state_dict(interpolate_state(base, trained, alpha), strict=False)
    return scale


def score_candidates(recipe: Recipe, tuned_dir: Path, base_dir: str, prepared: PreparedData) -> list[dict[str, Any]]:
    """Task and forgetting figures at alpha 0 (the base) and every grid value."""
    cfg = recipe.train.interpolate
    records = prepared.read_split("validation")[: cfg.examples]
    if not records:
        raise UsageError("train.interpolate: auto chooses alpha on the validation split, and it is empty "
                         "(give data.split a validation share, or set train.interpolate.alpha to a number)")
    model, tokenizer = load_for_inference(tuned_dir, recipe.task, recipe.model.trust_remote_code)
    model.eval()
    scale = lora_scaler(model) if is_lora_folder(tuned_dir) else full_scaler(model, base_dir)
    task = task_pieces(tokenizer, records, recipe)
    scale(0.0)
    general = general_pieces(model, tokenizer, cfg, recipe)  # the base's own answers
    rows = []
    with torch.inference_mode():
        for alpha in [0.0, *sorted(set(cfg.grid), reverse=True)]:
            scale(alpha)
            rows.append({"alpha": alpha, "task_nll": _mean_nll(model, task), "general_nll": _mean_nll(model, general),
                         "text_nll": {lang: figures["nll"] for lang, figures in text_perplexity(
                             model, tokenizer, cfg.text_tokens, recipe.eval.forgetting.window).items()}})
    return rows


def choose(rows: list[dict[str, Any]], keep: float) -> dict[str, Any]:
    """The least-forgetting alpha among those keeping ``keep`` of the task improvement (see the module doc)."""
    base, tuned = rows[0], max(rows, key=lambda r: r["alpha"])
    improvement = base["task_nll"] - tuned["task_nll"]
    for row in rows:
        row["task_kept"] = (base["task_nll"] - row["task_nll"]) / improvement if improvement > 0 else 1.0
        row["general_nll_increase"] = row["general_nll"] - base["general_nll"]
        row["text_perplexity_increase"] = {lang: math.exp(min(nll - base["text_nll"][lang], 700)) - 1
                                           for lang, nll in row["text_nll"].items()}  # 700: exp's float range
    candidates = [r for r in rows[1:] if r["task_kept"] >= keep] or [tuned]
    return min(candidates, key=lambda r: (round(r["general_nll_increase"], 6), -r["alpha"]))


def apply_interpolation(recipe: Recipe, tuned_dir: Path, base_dir: str, prepared: PreparedData) -> dict[str, Any]:
    """Choose alpha (``auto``) or take the recipe's, and write it into the saved model; the figures."""
    cfg = recipe.train.interpolate
    rows: list[dict[str, Any]] = []
    if cfg.alpha == "auto":
        rows = score_candidates(recipe, tuned_dir, base_dir, prepared)
        alpha = choose(rows, cfg.keep)["alpha"]
    else:
        alpha = float(cfg.alpha)
    if is_lora_folder(tuned_dir):
        scale_adapter(tuned_dir, alpha)
    else:
        interpolate_full(tuned_dir, read_weights(Path(base_dir)), read_weights(tuned_dir), alpha)
    say(f"interpolate: the fine-tune's change scaled by alpha {alpha:g} toward the base"
        + (f" (chosen on {cfg.examples} validation records, keeping >= {cfg.keep:.0%} of the task gain)"
           if rows else ""))
    return {"alpha": alpha, "chosen": "auto" if rows else "recipe", "keep": cfg.keep, "candidates": rows}
