"""Summed log-likelihoods: batched, under prompt learning (the virtual tokens' logits come first and are not
scored), and of continuations sharing their prompt's forward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from peft import PromptTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig

from ayar.eval import perplexity as perplexity_module
from ayar.eval.perplexity import continuation_nll_sums, nll_sums


def test_prompt_tuned_model_scores_its_real_tokens_only() -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=32, max_position_embeddings=64)
    model = get_peft_model(AutoModelForCausalLM.from_config(cfg),
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)).eval()
    ids, labels = [3, 7, 9, 11, 13, 15], [-100, -100, -100, 11, 13, 15]
    [(nll, count)] = nll_sums(model, [(ids, labels)])
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape[1] == len(ids) + 5  # the virtual tokens' positions come first
    expected = F.cross_entropy(logits[0, 5 + 2:-1], torch.tensor([11, 13, 15]), reduction="sum")
    assert count == 3
    assert abs(nll - float(expected)) < 1e-4


def _one_at_a_time(model: torch.nn.Module, ids: list[int], labels: list[int]) -> float:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    logits = logits[0, logits.shape[1] - len(ids):-1]
    return float(F.cross_entropy(logits, torch.tensor(labels[1:]), ignore_index=-100, reduction="sum"))


def test_batched_sums_equal_one_sequence_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=32, max_position_embeddings=64)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    gen = torch.Generator().manual_seed(1)
    pieces = []
    for length in [3, 17, 9, 30, 9, 2, 25]:
        ids = torch.randint(0, 40, (length,), generator=gen).tolist()
        pieces.append((ids, [-100] * (length // 2) + ids[length // 2:]))
    # a budget of 40 tokens per forward: several batches of mixed widths, padding in most rows
    monkeypatch.setattr(perplexity_module, "_LOGIT_BUDGET", 40 * 40)
    batched = nll_sums(model, pieces)
    for (ids, labels), (nll, count) in zip(pieces, batched, strict=True):
        assert count == sum(1 for label in labels[1:] if label != -100)
        assert nll == pytest.approx(_one_at_a_time(model, ids, labels), rel=1e-5)


def _tiny(kind: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if kind == "gpt2":  # absolute positions: the continuation's must follow its own prompt, not the padding
        cfg = GPT2Config(vocab_size=40, n_embd=16, n_layer=2, n_head=2, n_positions=64)
        return AutoModelForCausalLM.from_config(cfg).eval()
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, intermediate_size=32, max_position_embeddings=64)
    model = AutoModelForCausalLM.from_config(cfg).eval()
    if kind == "prompt-tuned":
        model = get_peft_model(model, PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4)).eval()
    return model


@pytest.mark.parametrize("opening", [0, 10])
@pytest.mark.parametrize("kind", ["llama", "gpt2", "prompt-tuned"])
def test_continuations_score_as_if_each_followed_its_prompt_alone(kind: str, opening: int,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny(kind)
    gen = torch.Generator().manual_seed(2)

    def tokens(n: int) -> list[int]:
        return torch.randint(1, 40, (n,), generator=gen).tolist()

    # prompts of mixed lengths (padding in the shared forward), with or without a common opening (a chat
    # template's system prompt), one to four options of one to five tokens
    shared = tokens(opening)
    prompts = [shared + tokens(n) for n in (7, 2, 13, 5, 9)]
    options = [[tokens(n) for n in lengths] for lengths in ([1, 3, 2, 5], [4], [2, 2, 1], [5, 1], [3, 3, 3, 3])]
    monkeypatch.setattr(perplexity_module, "_SHARED_PROMPTS", 2)  # several batches
    scored = continuation_nll_sums(model, prompts, options)
    for prompt, prompt_options, sums in zip(prompts, options, scored, strict=True):
        assert len(sums) == len(prompt_options)
        for option, (nll, count) in zip(prompt_options, sums, strict=True):
            expected = _one_at_a_time(model, prompt + option, [-100] * len(prompt) + option)
            assert count == len(option)
            assert nll == pytest.approx(expected, rel=1e-5)


def test_an_opening_shared_by_the_pieces_is_run_once_and_scores_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    model = _tiny("llama")
    gen = torch.Generator().manual_seed(3)
    opening = torch.randint(1, 40, (12,), generator=gen).tolist()
    pieces = []
    for length, unscored in [(5, 2), (9, 0), (3, 3), (14, 6)]:  # scoring starts right after the opening, or later
        ids = opening + torch.randint(1, 40, (length,), generator=gen).tolist()
        pieces.append((ids, [-100] * (len(opening) + unscored) + ids[len(opening) + unscored:]))
    openings = []
    cached = perplexity_module.opening.opening_cache
    monkeypatch.setattr(perplexity_module.opening, "opening_cache", lambda m, o, n: openings.append(len(o)) or cached(m, o, n))
    sums = nll_sums(model, pieces)
    assert openings == [len(opening)]  # one batch, its 12 shared tokens run once
    for (ids, labels), (nll, count) in zip(pieces, sums, strict=True):
        assert count == sum(1 for label in labels[1:] if label != -100)
        assert nll == pytest.approx(_one_at_a_time(model, ids, labels), rel=1e-5)
