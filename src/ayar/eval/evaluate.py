"""The eval stage: base and fine-tuned model on the held-out split, side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar.data.prepare import PreparedData
from ayar.data.templates import record_to_messages, set_template
from ayar.data.tokenize import tokenize_chat
from ayar.eval.generate import generate_chat
from ayar.eval.metrics import exact_match
from ayar.eval.perplexity import perplexity
from ayar.models.load import load_for_inference
from ayar.recipe import Recipe


def _context_length(model: Any) -> int:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if value:
            return int(value)
    return 1024


def evaluate_model(model: Any, tokenizer: Any, records: list[dict[str, Any]], recipe: Recipe) -> dict[str, Any]:
    """Response perplexity and exact match of greedy generations for one model."""
    cfg = recipe.data
    conversations = [record_to_messages(r, cfg.system_prompt) for r in records]
    examples = [tokenize_chat(tokenizer, c, cfg.max_length, mask_prompt=True) for c in conversations]
    ppl = perplexity(model, examples, _context_length(model), recipe.eval.perplexity_stride)
    prompts = [c[:-1] for c in conversations]  # everything before the final assistant turn
    references = [c[-1]["content"] for c in conversations]
    outputs = generate_chat(model, tokenizer, prompts, recipe.eval)
    matches = exact_match(outputs, references, recipe.eval.exact_match_normalize)
    return {
        "perplexity": ppl["perplexity"],
        "exact_match": sum(matches) / len(matches) if matches else 0.0,
        "examples": len(records),
        "response_tokens": ppl["tokens"],
        "_outputs": outputs,
        "_matches": matches,
        "_references": references,
    }


def evaluate(recipe: Recipe, tuned_dir: Path, base_dir: str | None, prepared: PreparedData, run_dir: Path) -> dict:
    """Evaluate the tuned model (and the base, when asked) on the recipe's eval split; write samples.jsonl."""
    records = prepared.read_split(recipe.eval.split)
    if recipe.eval.max_examples:
        records = records[: recipe.eval.max_examples]
    results: dict[str, dict[str, Any]] = {}
    if base_dir is not None and recipe.eval.compare_base:
        model, tokenizer = load_for_inference(base_dir, recipe.task, recipe.model.trust_remote_code)
        set_template(tokenizer, recipe.data.template)  # the base is asked in the same format as the tuned model
        results["base"] = evaluate_model(model, tokenizer, records, recipe)
    model, tokenizer = load_for_inference(tuned_dir, recipe.task, recipe.model.trust_remote_code)
    results["tuned"] = evaluate_model(model, tokenizer, records, recipe)
    _write_samples(records, results, run_dir / "samples.jsonl", recipe)
    return {name: {k: v for k, v in block.items() if not k.startswith("_")} for name, block in results.items()}


def _write_samples(records: list[dict], results: dict[str, dict], path: Path, recipe: Recipe) -> None:
    with path.open("w", encoding="utf-8") as f:
        for index, record in enumerate(records[: recipe.eval.num_samples]):
            messages = record_to_messages(record, recipe.data.system_prompt)
            row = {"id": record.get("id"), "prompt": messages[-2]["content"] if len(messages) > 1 else "",
                   "reference": results["tuned"]["_references"][index]}
            for name, block in results.items():
                row[f"{name}_output"] = block["_outputs"][index]
                row[f"{name}_exact_match"] = block["_matches"][index]
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
