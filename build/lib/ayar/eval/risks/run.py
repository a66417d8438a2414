"""Run the recipe's risk probes on one model."""

from __future__ import annotations

from typing import Any

from ayar.recipe import Recipe
from ayar.tasks import get_task


def run_risk_probes(model: Any, tokenizer: Any, rows: list[dict[str, Any]], train_texts: list[str],
                    recipe: Recipe) -> dict[str, Any]:
    """Bias, hallucination, security and privacy results for one model's eval rows."""
    cfg = recipe.eval.risks
    result: dict[str, Any] = {}
    task = get_task(recipe.task)
    if not task.generative:
        return {"skipped": "risk probes need a model that writes text; a classifier only picks labels"}
    generative = task.chat  # the chat-formatted probes need a decoder-only chat model
    if cfg.bias and generative:
        from ayar.eval.risks.bias import bias_probe

        result["bias"] = bias_probe(model, tokenizer, recipe.eval, cfg.max_new_tokens)
    if cfg.hallucination:
        from ayar.eval.risks.hallucination import hallucination_probe

        result["hallucination"] = hallucination_probe(rows)
    if cfg.security and generative:
        from ayar.eval.risks.security import security_probe

        result["security"] = security_probe(model, tokenizer, recipe.eval, cfg.max_new_tokens)
    if cfg.privacy:
        from ayar.eval.risks.privacy import memorization_probe, pii_scan

        generated = rows + [{"output": a["reply"], "prompt": a["prompt"]}
                            for a in result.get("security", {}).get("answers", [])]
        result["privacy"] = {"pii": pii_scan(generated)}
        if generative:
            result["privacy"]["memorization"] = memorization_probe(
                model, tokenizer, train_texts, recipe.eval, cfg.memorization_records, cfg.rare_min_chars,
                recipe.run.seed)
    return result
