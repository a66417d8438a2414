"""LoRA on both tied embedding layers: the merged model computes exactly what the adapted one did."""

from __future__ import annotations

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ayar.methods import build_method
from ayar.models.load import merge_adapter


def adapted_tied_llama(targets: tuple[str, ...] = ("q_proj", "v_proj", "embed_tokens", "lm_head")) -> torch.nn.Module:
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))
    params = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": list(targets)}
    model = build_method("lora", params).prepare_model(base, "causal_lm")
    with torch.no_grad():  # a trained adapter: every LoRA matrix non-zero
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0, 0.2)
    return model.eval()


def test_merging_adapters_on_tied_layers_keeps_the_adapted_outputs() -> None:
    ids = torch.randint(0, 64, (2, 9))
    model = adapted_tied_llama()
    adapted = model(input_ids=ids).logits
    merged = merge_adapter(model)
    assert merged.config.tie_word_embeddings is False
    torch.testing.assert_close(merged(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-4)


def test_peft_alone_merges_both_deltas_into_the_shared_weight() -> None:
    """Why merge_adapter unties first: peft's own merge of this model is wrong (the test fails if peft fixes it)."""
    ids = torch.randint(0, 64, (2, 9))
    model = adapted_tied_llama()
    adapted = model(input_ids=ids).logits
    assert (model.merge_and_unload()(input_ids=ids).logits - adapted).abs().max() > 1.0


def test_merging_adapters_off_the_tied_layers_keeps_them_tied() -> None:
    """No adapter on either embedding layer: the merged model keeps one shared matrix (no extra copy)."""
    ids = torch.randint(0, 64, (2, 9))
    model = adapted_tied_llama(("q_proj", "v_proj"))
    adapted = model(input_ids=ids).logits
    merged = merge_adapter(model)
    assert merged.config.tie_word_embeddings is True
    assert merged.get_output_embeddings().weight is merged.get_input_embeddings().weight
    torch.testing.assert_close(merged(input_ids=ids).logits, adapted, rtol=1e-4, atol=1e-4)
