"""QLoRA: a clear stop without CUDA; the real 4-bit/8-bit path on a GPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from method_helpers import assert_overfits, changed_names, linear_dims, modules_matching, snapshot, tiny_batch

from ayar.errors import UsageError
from ayar.methods import build_method, check_method
from ayar.methods.base import count_parameters
from ayar.methods.qlora import quantization_config
from ayar.recipe import MethodConfig


def test_without_cuda_it_stops_before_loading_and_suggests_lora(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    method = build_method("qlora")
    for check in (lambda: method.preflight("causal_lm"), lambda: method.model_load_kwargs("causal_lm")):
        with pytest.raises(UsageError, match=r"CUDA GPU.*method.name: lora"):
            check()


def test_a_full_precision_model_is_refused() -> None:
    from method_helpers import tiny_model

    with pytest.raises(UsageError, match="full-precision"):
        build_method("qlora").prepare_model(tiny_model("llama"), "causal_lm")


def test_quantization_configs() -> None:
    four = quantization_config(build_method("qlora").params)
    assert four.load_in_4bit and four.bnb_4bit_quant_type == "nf4" and four.bnb_4bit_use_double_quant
    assert four.bnb_4bit_compute_dtype == torch.bfloat16
    eight = quantization_config(build_method("qlora", {"bits": 8}).params)
    assert eight.load_in_8bit and not eight.load_in_4bit


def test_recipe_rejects_other_bit_widths() -> None:
    with pytest.raises(UsageError, match="method.bits"):
        check_method(MethodConfig(name="qlora", bits=3))


@pytest.mark.gpu
@pytest.mark.parametrize("bits", [4, 8])
def test_kbit_base_with_lora_trains_only_adapters(bits: int, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=4, intermediate_size=128, max_position_embeddings=64, initializer_range=0.2,
                      tie_word_embeddings=False)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(tmp_path)
    method = build_method("qlora", {"bits": bits, "r": 4, "target_modules": ["q_proj", "v_proj"]})
    method.preflight("causal_lm")
    model = AutoModelForCausalLM.from_pretrained(tmp_path, **method.model_load_kwargs("causal_lm"))
    model = method.prepare_model(model, "causal_lm")
    # 4-bit weights are packed, so compute the LoRA count from the full-precision twin.
    twin = AutoModelForCausalLM.from_config(cfg)
    assert count_parameters(model)[0] == sum(4 * sum(linear_dims(m))
                                             for m in modules_matching(twin, ["q_proj", "v_proj"]))
    batch = {k: v.cuda() for k, v in tiny_batch("llama").items()}
    before = snapshot(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert_overfits(model, batch, steps=30, lr=3e-2, ratio=0.8)
    assert changed_names(before, model) == trainable
