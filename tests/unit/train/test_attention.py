"""Short-row attention: in bf16 on the CPU, rows up to this CPU kind's limit go through transformers' plain
attention and longer ones through SDPA, so a training step computes what one of those two computes."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from ayar.methods import build_method
from ayar.train.attention import (
    NAME,
    SHORT_ROWS,
    SHORT_ROWS_AMX,
    SHORT_ROWS_AVX512_BF16,
    short_rows_for,
    use_short_rows_attention,
)
from ayar.train.trainer import prepare_model


def _model(attention: str) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=101, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                         attn_implementation=attention)
    return LlamaForCausalLM(config)


def _step(model: LlamaForCausalLM, length: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss and gradients of one bf16-autocast step on a padded batch of rows of up to ``length`` tokens."""
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 101, (3, length), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, length // 2:] = 0  # a shorter row, right-padded
    labels = ids.masked_fill(mask == 0, -100)
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


def _switched(model: LlamaForCausalLM) -> LlamaForCausalLM:
    switched = copy.deepcopy(model)
    assert use_short_rows_attention(switched, "bf16")
    assert switched.config._attn_implementation == NAME
    return switched


@pytest.mark.parametrize(("length", "same_as"), [(48, "eager"), (SHORT_ROWS + 40, "sdpa")])
def test_a_step_computes_what_the_path_for_its_row_length_computes(length: int, same_as: str) -> None:
    reference = _model(same_as)
    switched = _switched(_model("sdpa"))
    loss, grads = _step(switched, length)
    expected_loss, expected_grads = _step(reference, length)
    assert torch.equal(loss, expected_loss)
    for name, grad in grads.items():
        assert torch.equal(grad, expected_grads[name]), name


def test_short_rows_agree_with_sdpa_within_bf16_rounding() -> None:
    loss, grads = _step(_switched(_model("sdpa")), 48)
    sdpa_loss, sdpa_grads = _step(_model("sdpa"), 48)
    assert abs(loss - sdpa_loss) / sdpa_loss < 1e-2
    for name, grad in grads.items():
        reference = sdpa_grads[name]
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), reference.flatten(), dim=0)
        assert cosine > 0.99, name


def test_only_bf16_training_on_the_cpu_with_sdpa_switches() -> None:
    assert not use_short_rows_attention(_model("sdpa"), "fp32")
    assert not use_short_rows_attention(_model("eager"), "bf16")  # a recipe's own choice stays
    lora = prepare_model(build_method("lora", {"r": 4, "target_modules": "all-linear"}), _model("sdpa"),
                         "causal_lm", "bf16")
    assert lora.get_base_model().config._attn_implementation == NAME


def test_the_limit_follows_the_cpu_kind() -> None:
    assert short_rows_for({"avx2", "avx512f", "avx512_bf16"}) == SHORT_ROWS_AVX512_BF16 == 512
    assert short_rows_for({"avx2", "avx512_bf16", "amx_bf16", "amx_tile"}) == SHORT_ROWS_AMX == 160
    assert short_rows_for({"avx2"}) == SHORT_ROWS_AMX  # no bf16 units: ayar trains in fp32 there, never asked
    assert SHORT_ROWS in (SHORT_ROWS_AMX, SHORT_ROWS_AVX512_BF16)
