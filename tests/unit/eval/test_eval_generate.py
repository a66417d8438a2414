"""Batched generation: the same answer alone or in a batch, stop strings, seeded sampling."""

from __future__ import annotations

from pathlib import Path

from ayar.eval.generate import cut_at_stop, generate
from ayar.models.load import load_for_inference
from ayar.recipe import EvalConfig


def test_cut_at_stop() -> None:
    assert cut_at_stop("cevap 42\n### Instruction", ["###", "\n\n"]) == "cevap 42\n"
    assert cut_at_stop("no stop here", ["###"]) == "no stop here"


def test_batched_greedy_equals_one_by_one_and_sampling_is_seeded(tiny_model_dir: Path) -> None:
    model, tokenizer = load_for_inference(tiny_model_dir)
    prompts = ["def main():", "The quick brown fox jumps over the lazy dog and", "import"]
    greedy = EvalConfig(max_new_tokens=6, batch_size=3)
    batched = generate(model, tokenizer, prompts, greedy)
    alone = [generate(model, tokenizer, [p], greedy.model_copy(update={"batch_size": 1}))[0] for p in prompts]
    assert batched == alone
    sampled = EvalConfig(max_new_tokens=6, do_sample=True, temperature=1.5, top_k=50, top_p=0.95)
    assert generate(model, tokenizer, prompts, sampled, seed=3) == generate(model, tokenizer, prompts, sampled, seed=3)
    short = generate(model, tokenizer, ["x " * 500], EvalConfig(max_new_tokens=4))  # longer than the context
    assert len(short) == 1
