"""LoRA, DoRA, IA3, prompt tuning, prefix tuning and p-tuning through peft, on every model family."""

from __future__ import annotations

import pytest
from method_helpers import (
    NUM_LABELS,
    TASK_OF,
    assert_method_effects,
    assert_overfits,
    linear_dims,
    modules_matching,
    tiny_batch,
    tiny_model,
)

from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.base import count_parameters

FAMILIES = ["llama", "gpt2", "bert", "llama_cls", "t5"]
HIDDEN, LAYERS, TOKENS = 16, 3, 4
# peft's default targets per architecture, written out here so that the test does not reuse the code under test.
LORA_TARGETS = {"llama": ["q_proj", "v_proj"], "gpt2": ["c_attn"], "bert": ["query", "value"], "t5": ["q", "v"]}
IA3_TARGETS = {  # (targets, feed-forward targets)
    "llama": (["k_proj", "v_proj", "down_proj"], ["down_proj"]),
    "gpt2": (["c_attn", "mlp.c_proj"], ["mlp.c_proj"]),
    "bert": (["key", "value", "output.dense"], ["output.dense"]),
    "t5": (["k", "v", "wo"], ["wo"]),
}


def arch(family: str) -> str:
    return family.removesuffix("_cls")


def head_count(family: str) -> int:
    """A classifier's new head trains in full: BERT's classifier has a bias, Llama's score has none."""
    return {"bert": HIDDEN * NUM_LABELS + NUM_LABELS, "llama_cls": HIDDEN * NUM_LABELS}.get(family, 0)


def expected_count(method: str, family: str) -> int:
    model = tiny_model(family)
    if method in ("lora", "dora"):
        r = 8
        count = 0
        for module in modules_matching(model, LORA_TARGETS[arch(family)]):
            fan_in, fan_out = linear_dims(module)
            count += r * (fan_in + fan_out) + (fan_out if method == "dora" else 0)  # DoRA: a magnitude per row
    elif method == "ia3":
        targets, feedforward = IA3_TARGETS[arch(family)]
        ff_ids = {id(m) for m in modules_matching(model, feedforward)}
        count = sum(linear_dims(m)[0] if id(m) in ff_ids else linear_dims(m)[1]
                    for m in modules_matching(model, targets))
    else:
        streams = 2 if family == "t5" else 1  # peft keeps separate virtual tokens for encoder and decoder
        if method == "prompt_tuning":
            count = TOKENS * HIDDEN * streams
        elif method == "prefix_tuning":
            count = TOKENS * LAYERS * 2 * HIDDEN  # a key and a value vector per token and layer
        else:  # p_tuning: embedding + 3-layer MLP of the model's width
            count = TOKENS * HIDDEN * streams + 3 * (HIDDEN * HIDDEN + HIDDEN)
    return count + head_count(family)


def params_for(method: str) -> dict:
    return {"num_virtual_tokens": TOKENS} if method in ("prompt_tuning", "prefix_tuning", "p_tuning") else {}


METHODS = ["lora", "dora", "ia3", "prompt_tuning", "prefix_tuning", "p_tuning"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("method", METHODS)
def test_trainable_count_and_weight_effects(method: str, family: str) -> None:
    model = build_method(method, params_for(method)).prepare_model(tiny_model(family), TASK_OF[family])
    trainable, total = count_parameters(model)
    assert trainable == expected_count(method, family)
    assert trainable < total
    assert_method_effects(model, tiny_batch(family))


@pytest.mark.parametrize(("method", "family"), [
    ("lora", "llama"), ("lora", "bert"), ("lora", "t5"), ("dora", "gpt2"), ("ia3", "llama"), ("ia3", "t5"),
    ("prompt_tuning", "llama"), ("prompt_tuning", "bert"), ("prefix_tuning", "gpt2"), ("prefix_tuning", "t5"),
    ("p_tuning", "llama"), ("p_tuning", "llama_cls"),
])
def test_loss_falls_on_an_overfit_batch(method: str, family: str) -> None:
    model = build_method(method, params_for(method)).prepare_model(tiny_model(family), TASK_OF[family])
    assert_overfits(model, tiny_batch(family), steps=20, lr=3e-2, ratio=0.8)


def test_lora_target_modules_override() -> None:
    model = build_method("lora", {"target_modules": ["o_proj"], "r": 2}).prepare_model(tiny_model("llama"),
                                                                                       "causal_lm")
    assert count_parameters(model)[0] == LAYERS * 2 * (HIDDEN + HIDDEN)
    assert all("o_proj" in name for name, p in model.named_parameters() if p.requires_grad)


def training_forward_is_deterministic(lora_params: dict) -> bool:
    """Two training-mode forwards of a LoRA Llama with moved adapters, under different seeds, agree bitwise."""
    import torch

    model = build_method("lora", lora_params).prepare_model(tiny_model("llama"), "causal_lm")
    for name, param in model.named_parameters():
        if "lora_B" in name:  # peft starts B at zero, where dropout on A's input would change nothing
            torch.nn.init.normal_(param, std=0.5)
    model.train()
    batch = tiny_batch("llama")
    torch.manual_seed(0)
    first = model(**batch).logits
    torch.manual_seed(1)
    return torch.equal(first, model(**batch).logits)


def test_lora_defaults_train_without_adapter_dropout() -> None:
    assert training_forward_is_deterministic({})
    assert not training_forward_is_deterministic({"dropout": 0.5})  # the control: dropout shows here


def test_peft_refusal_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="method 'lora' cannot wrap"):
        build_method("lora", {"target_modules": ["no_such_module"]}).prepare_model(tiny_model("llama"), "causal_lm")


def test_ia3_own_targets_need_feedforward_named() -> None:
    with pytest.raises(UsageError, match="feedforward_modules"):
        build_method("ia3", {"target_modules": ["q_proj"]}).prepare_model(tiny_model("llama"), "causal_lm")
    model = build_method("ia3", {"target_modules": ["q_proj"], "feedforward_modules": []}).prepare_model(
        tiny_model("llama"), "causal_lm")
    assert count_parameters(model)[0] == LAYERS * HIDDEN


@pytest.mark.parametrize("method", METHODS)
def test_t5_classification_head_trains_in_full(method: str) -> None:
    """peft knows only 'classifier' and 'score' as heads; T5's 'classification_head' must not stay random."""
    from transformers import AutoModelForSequenceClassification, T5Config

    cfg = T5Config(vocab_size=48, d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2, dropout_rate=0.0,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1, num_labels=NUM_LABELS)
    model = AutoModelForSequenceClassification.from_config(cfg)
    head = {f"classification_head.{n}" for n, _ in model.classification_head.named_parameters()}
    model = build_method(method, params_for(method)).prepare_model(model, "classification")
    trained = {n for n, p in model.named_parameters() if p.requires_grad and "classification_head" in n}
    assert {n.split("modules_to_save.default.")[-1] for n in trained} == {h.split(".", 1)[1] for h in head}


def test_ia3_on_an_unmapped_architecture_asks_for_targets() -> None:
    model = tiny_model("llama")
    model.config.model_type = "no_such_arch"
    with pytest.raises(UsageError, match="no default target modules"):
        build_method("ia3").prepare_model(model, "causal_lm")
