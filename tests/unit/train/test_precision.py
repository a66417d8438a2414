"""Frozen LoRA base weights stored in bf16: bitwise the same bf16-autocast training, half their memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_packing import VOCAB, tiny_model
from transformers import TrainerCallback

from ayar.data.prepare import prepare
from ayar.recipe import load_recipe
from ayar.train.engine import train
from ayar.train.precision import store_frozen_matmul_weights


def lora_model(kind: str) -> torch.nn.Module:
    modules = ["c_attn", "c_fc"] if kind == "gpt2" else ["q_proj", "up_proj"]
    model = get_peft_model(tiny_model(kind, "sdpa"), LoraConfig(r=4, lora_alpha=8, target_modules=modules))
    for seed, (name, param) in enumerate(model.named_parameters()):
        if "lora_B" in name:  # start away from zero so the base and adapter paths both shape the gradients
            torch.nn.init.normal_(param, std=0.1, generator=torch.Generator().manual_seed(seed))
    return model.train()


def autocast_steps(model: torch.nn.Module, steps: int = 3) -> tuple[list[float], list[torch.Tensor]]:
    """A few AdamW steps under bf16 autocast; the losses and the trainable weights after them."""
    gen = torch.Generator().manual_seed(0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-2)
    losses = []
    for _ in range(steps):
        ids = torch.randint(0, VOCAB, (2, 12), generator=gen)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, [p.detach().clone() for p in trainable]


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_bf16_frozen_weights_train_bitwise_the_same(kind: str) -> None:
    plain_losses, plain = autocast_steps(lora_model(kind))
    model = lora_model(kind)
    frozen_bytes = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    cast = store_frozen_matmul_weights(model, torch.bfloat16)
    assert cast > 0
    after = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    assert after == frozen_bytes - 2 * cast  # each cast value went from 4 bytes to 2
    losses, weights = autocast_steps(model)
    assert losses == plain_losses
    assert plain_losses[-1] != plain_losses[0]
    for a, b in zip(weights, plain, strict=True):
        assert torch.equal(a, b)


def test_trainable_embedding_shared_and_tied_weights_stay_fp32() -> None:
    model = lora_model("gpt2")  # GPT-2 ties lm_head to the token embedding
    store_frozen_matmul_weights(model, torch.bfloat16)
    base = model.base_model.model
    assert base.lm_head.weight.dtype == torch.float32  # shared with the embedding lookup
    assert base.transformer.wte.weight.dtype == torch.float32
    assert base.transformer.h[0].attn.c_attn.base_layer.weight.dtype == torch.bfloat16
    assert base.transformer.h[0].attn.c_attn.lora_A["default"].weight.dtype == torch.float32  # trainable
    assert base.transformer.h[0].ln_1.weight.dtype == torch.float32  # not a matmul weight


class BaseDtypes(TrainerCallback):
    def __init__(self) -> None:
        self.dtypes: dict[str, set[torch.dtype]] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        for trainable in (True, False):
            self.dtypes[str(trainable)] = {p.dtype for p in model.parameters() if p.requires_grad is trainable}


@pytest.mark.parametrize(("method", "precision", "frozen"), [
    ("lora", "bf16", {torch.float32, torch.bfloat16}), ("lora", "fp32", {torch.float32}),
    ("dora", "bf16", {torch.float32}),
])
def test_the_engine_stores_them_for_lora_under_bf16_only(tiny_model_dir: Path, tmp_path: Path, method: str,
                                                        precision: str, frozen: set) -> None:
    recipe = load_recipe(None, [f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}",
                                f"run.name={method}{precision}", "data.synthetic.num_records=16", "train.max_steps=1",
                                f"train.precision={precision}", f"method.name={method}"])
    prepared = prepare(recipe.data, tmp_path / "data", recipe.run.seed)
    seen = BaseDtypes()
    train(recipe, str(tiny_model_dir), prepared, recipe.run_dir, extra_callbacks=[seen])
    assert seen.dtypes == {"True": {torch.float32}, "False": frozen}


def test_adapters_without_their_input_casts_train_bitwise_the_same() -> None:
    from ayar.train.precision import skip_adapter_input_casts

    def model() -> torch.nn.Module:  # o_proj and down_proj take bf16 activations under autocast
        torch.manual_seed(0)
        peft_model = get_peft_model(tiny_model("llama", "sdpa"), LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "o_proj", "up_proj", "down_proj"]))
        return peft_model.train()

    plain_losses, plain = autocast_steps(model())
    skipping = model()
    assert skip_adapter_input_casts(skipping, "fp32") == 0  # without autocast the cast is what makes it run
    assert skip_adapter_input_casts(skipping, "bf16") == 4 * 2  # four modules in each of two layers
    losses, weights = autocast_steps(skipping)
    assert losses == plain_losses and plain_losses[-1] != plain_losses[0]
    for a, b in zip(weights, plain, strict=True):
        assert torch.equal(a, b)
