"""Perplexity under prompt learning: the virtual tokens' logits come first and are not scored."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from peft import PromptTuningConfig, get_peft_model
from transformers import AutoModelForCausalLM, LlamaConfig

from ayar.eval.perplexity import _nll_sum


def test_prompt_tuned_model_scores_its_real_tokens_only() -> None:
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=32, max_position_embeddings=64)
    model = get_peft_model(AutoModelForCausalLM.from_config(cfg),
                           PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=5)).eval()
    ids, labels = [3, 7, 9, 11, 13, 15], [-100, -100, -100, 11, 13, 15]
    nll, count = _nll_sum(model, ids, labels)
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits
    assert logits.shape[1] == len(ids) + 5  # the virtual tokens' positions come first
    expected = F.cross_entropy(logits[0, 5 + 2:-1], torch.tensor([11, 13, 15]), reduction="sum")
    assert count == 3
    assert abs(nll - float(expected)) < 1e-4
