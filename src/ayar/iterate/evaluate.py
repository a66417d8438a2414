"""v1 and v2 on the held-out feedback: the users' own verdict and its log-probability proxies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ayar.iterate.feedback import Records
from ayar.recipe import Recipe


def held_out_targets(held: Records) -> list[tuple[str, str]]:
    """(prompt, the answer the user wanted) for each held-out prompt that has one: its correction, or the
    served answer the user rated up."""
    targets = {r["instruction"]: r["output"] for r in held["sft"]}
    for r in held["kto"]:
        if r["label"]:
            targets.setdefault(r["prompt"], r["completion"])
    return sorted(targets.items())


def greedy_hits(model: Any, tokenizer: Any, targets: list[tuple[str, str]], recipe: Recipe) -> list[bool]:
    """Whether the model's greedy answer to each prompt is the wanted answer (whitespace stripped): the
    user's own verdict, where preference accuracy is only a log-probability proxy for it."""
    from ayar.eval.generate import generate_chat

    cfg = recipe.eval.model_copy(update={"do_sample": False})
    outputs = generate_chat(model, tokenizer, [[{"role": "user", "content": p}] for p, _ in targets], cfg)
    return [o.strip() == want.strip() for o, (_, want) in zip(outputs, targets, strict=True)]


def _model_block(model: Any, tokenizer: Any, held: Records, targets: list[tuple[str, str]], recipe: Recipe
                 ) -> tuple[dict[str, Any], list[bool]]:
    """One model's figures on the held-out feedback, and which wanted answers it gave greedily."""
    from ayar.eval.preference import completion_logps, preference_scores

    block: dict[str, Any] = {}
    right = greedy_hits(model, tokenizer, targets, recipe) if targets else []
    if targets:
        block["answers_right"] = sum(right)
    if held["pairs"]:
        scores = preference_scores(model, tokenizer, held["pairs"], recipe.data.system_prompt)
        block["preference"] = {k: v for k, v in scores.items() if k != "margins"}
    if held["sft"]:
        logps = completion_logps(model, tokenizer, [[{"role": "user", "content": r["instruction"]}]
                                                    for r in held["sft"]],
                                 [[{"role": "assistant", "content": r["output"]}] for r in held["sft"]])
        block["correction_logp_mean"] = sum(logps) / len(logps)
    return block, right


def answer_duel(v1_right: list[bool], v2_right: list[bool]) -> dict[str, Any]:
    """Held-out requests that v2 answers as the user wanted and v1 does not (wins), and the reverse (losses);
    the win rate counts a tie as half."""
    wins = sum(b and not a for a, b in zip(v1_right, v2_right, strict=True))
    losses = sum(a and not b for a, b in zip(v1_right, v2_right, strict=True))
    requests = len(v1_right)
    return {"requests": requests, "v2_wins": wins, "v2_losses": losses,
            "win_rate": (wins + (requests - wins - losses) / 2) / requests}


def feedback_eval(v1_model: Path, v2_model: Path, held: Records, recipe: Recipe) -> dict[str, Any]:
    """v1 and v2 on the held-out feedback: preference accuracy/margin on pairs, log-prob of corrections,
    and greedy answers the user wanted."""
    from ayar.data.templates import set_template
    from ayar.models.load import load_for_inference

    result: dict[str, Any] = {"pairs": len(held["pairs"]), "corrections": len(held["sft"]),
                              "ratings": len(held["kto"])}
    targets = held_out_targets(held)
    right: dict[str, list[bool]] = {}
    for name, path in (("v1", v1_model), ("v2", v2_model)):
        model, tokenizer = load_for_inference(path)
        if not tokenizer.chat_template:
            set_template(tokenizer, recipe.data.template, recipe.data.enable_thinking)
        result[name], right[name] = _model_block(model, tokenizer, held, targets, recipe)
        del model
    if targets:
        result["answers"] = answer_duel(right["v1"], right["v2"])
    return result
