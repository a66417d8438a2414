"""The from-scratch base is saved with untied embeddings that compute exactly what the tied model did."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from ayar.models.load import untie_embeddings
from ayar.models.scratch import build_model, train_tokenizer
from ayar.recipe import ScratchModelConfig, TokenizerTrainConfig


def test_untied_base_keeps_its_outputs_and_owns_its_output_layer(tmp_path) -> None:
    text = "def add(a, b):\n    return a + b\n\n" * 50 + "Numbers 0123456789 and words.\n\n" * 20
    tokenizer: PreTrainedTokenizerFast = train_tokenizer(text, TokenizerTrainConfig(vocab_size=300))
    model = build_model(ScratchModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                           context_length=64), tokenizer, seed=0).eval()
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    ids = torch.tensor([tokenizer("def add(a, b): 42")["input_ids"]])
    before = model(ids).logits

    untie_embeddings(model)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()

    assert loaded.config.tie_word_embeddings is False
    assert loaded.get_output_embeddings().weight.data_ptr() != loaded.get_input_embeddings().weight.data_ptr()
    torch.testing.assert_close(loaded(ids).logits, before, rtol=0, atol=0)
    with torch.no_grad():  # changing the input embeddings no longer changes the output layer
        loaded.get_input_embeddings().weight.add_(1.0)
    torch.testing.assert_close(loaded.get_output_embeddings().weight, model.get_output_embeddings().weight)
