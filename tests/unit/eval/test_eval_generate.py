"""Batched generation: the same answer alone or in a batch, stop strings, seeded sampling, and a shared
opening run once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config

from ayar.eval import generate as generate_module
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


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_a_shared_opening_run_once_gives_the_answers_of_plain_left_padding(
        kind: str, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model, tokenizer = load_for_inference(tiny_model_dir)
    if kind == "gpt2":  # absolute positions: each row's text must continue right after the opening
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=2,
                                                            n_head=2, n_positions=128)).eval()
    opening = "System: answer the question in one word, as briefly as you can.\nUser: "
    prompts = [opening + q for q in ("def main():", "The quick brown fox jumps over the lazy dog and", "import",
                                     "class Error(Exception):")]
    greedy = EvalConfig(max_new_tokens=8, batch_size=4)
    used = []
    plain_inputs = generate_module._batch_inputs
    monkeypatch.setattr(generate_module, "_batch_inputs", lambda *a: used.append(out := plain_inputs(*a)) or out)
    shared = generate(model, tokenizer, prompts, greedy)
    assert "past_key_values" in used[-1]  # the opening was run once and its cache handed to generate
    monkeypatch.setattr(generate_module.opening, "MIN_SHARED_TOKENS", 10**6)
    plain = generate(model, tokenizer, prompts, greedy)
    assert "past_key_values" not in used[-1]
    assert shared == plain
    assert len(set(plain)) > 1  # the prompts' own endings matter to the answers
