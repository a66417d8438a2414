"""LoRA's update added by addmm: peft's forward and gradients, within bf16 rounding, and peft's own elsewhere."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from test_packing import VOCAB, tiny_model
from test_precision import lora_model

from ayar.train.lora_addmm import lora_addmm_forward, undo_lora_addmm, use_lora_addmm


def loss_and_grads(model: torch.nn.Module, ids: torch.Tensor, bf16: bool) -> tuple[float, list[torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    torch.manual_seed(0)  # GPT-2's dropout draws the same masks in every call
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.item(), [p.grad.float().clone() for p in model.parameters() if p.requires_grad]


def relative_error(grads: list[torch.Tensor], reference: list[torch.Tensor]) -> float:
    diff = sum(((g - r) ** 2).sum() for g, r in zip(grads, reference, strict=True))
    return float((diff / sum((r**2).sum() for r in reference)).sqrt())


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_fp32_forward_and_gradients_equal_peft(kind: str) -> None:
    ids = torch.randint(0, VOCAB, (3, 10), generator=torch.Generator().manual_seed(1))
    model = lora_model(kind)
    loss, grads = loss_and_grads(model, ids, bf16=False)
    # the addmm forward outside bf16 (where the engine never sets it): the same sums, as peft's dtype rule holds
    assert use_lora_addmm(model, "bf16") == 2 * 2  # two target modules in each of the two layers
    addmm_loss, addmm_grads = loss_and_grads(model, ids, bf16=False)
    assert addmm_loss == pytest.approx(loss, rel=1e-6)
    assert relative_error(addmm_grads, grads) < 1e-6


@pytest.mark.parametrize("kind", ["gpt2", "llama"])
def test_bf16_loss_and_gradients_as_close_to_fp32_as_peft(kind: str) -> None:
    ids = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(2))
    model = lora_model(kind)
    reference_loss, reference = loss_and_grads(model, ids, bf16=False)
    peft_loss, peft_grads = loss_and_grads(model, ids, bf16=True)
    use_lora_addmm(model, "bf16")
    addmm_loss, addmm_grads = loss_and_grads(model, ids, bf16=True)
    assert addmm_loss != peft_loss or addmm_grads != peft_grads  # it did run another computation
    assert abs(addmm_loss - reference_loss) <= max(2 * abs(peft_loss - reference_loss), 1e-2 * reference_loss)
    peft_error = relative_error(peft_grads, reference)
    assert 0 < peft_error < 0.05  # bf16's rounding, not another function
    assert relative_error(addmm_grads, reference) <= 1.5 * peft_error


def fixed_batch_steps(model: torch.nn.Module, steps: int, bf16: bool = True) -> tuple[list[float], list[torch.Tensor]]:
    """AdamW steps (under bf16 autocast, or in fp32) on one batch, so the loss falls; the losses and the weights."""
    ids = torch.randint(0, VOCAB, (4, 16), generator=torch.Generator().manual_seed(4))
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=5e-2)
    losses = []
    for _ in range(steps):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses, [p.detach().clone() for p in trainable]


def test_bf16_training_run_stays_as_close_to_fp32_as_peft() -> None:
    model = lora_model("llama")
    start = [p.detach().clone() for p in model.parameters() if p.requires_grad]
    fp32_losses, fp32_weights = fixed_batch_steps(copy.deepcopy(model), steps=8, bf16=False)
    peft_losses, peft_weights = fixed_batch_steps(copy.deepcopy(model), steps=8)
    use_lora_addmm(model, "bf16")
    losses, weights = fixed_batch_steps(model, steps=8)
    assert peft_losses[-1] < 0.97 * peft_losses[0]
    assert losses == pytest.approx(peft_losses, rel=2e-2)

    def moved(after: list[torch.Tensor]) -> list[torch.Tensor]:
        return [a - s for a, s in zip(after, start, strict=True)]

    peft_drift = relative_error(moved(peft_weights), moved(fp32_weights))
    assert 0 < peft_drift < 0.2
    assert relative_error(moved(weights), moved(fp32_weights)) <= 1.5 * peft_drift


def test_fp32_training_keeps_peft_forward() -> None:
    model = lora_model("llama")
    assert use_lora_addmm(model, "fp32") == 0
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_undo_restores_peft_forward() -> None:
    model = lora_model("llama")
    changed = use_lora_addmm(model, "bf16")
    assert undo_lora_addmm(model) == changed > 0
    assert not any("forward" in m.__dict__ for m in model.modules())


def test_dora_layers_keep_peft_forward() -> None:
    model = get_peft_model(tiny_model("llama", "sdpa"), LoraConfig(r=4, use_dora=True, target_modules=["q_proj"]))
    assert use_lora_addmm(model, "bf16") == 2
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(2, 5, layer.in_features)
    # a variant adapter goes through peft's own forward: the same tensor, bit for bit
    assert torch.equal(lora_addmm_forward(layer, x), type(layer).forward(layer, x))


def test_disabled_adapter_gives_the_base_output() -> None:
    model = lora_model("llama")
    use_lora_addmm(model, "bf16")
    ids = torch.randint(0, VOCAB, (2, 8), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        with model.disable_adapter():
            off = model(input_ids=ids).logits
        on = model(input_ids=ids).logits
        base = model.get_base_model()
        undo_lora_addmm(model)
        with model.disable_adapter():
            peft_off = base(input_ids=ids).logits
    assert torch.equal(off, peft_off)
    assert not torch.allclose(on, off)  # the adapter (B away from zero) does change the output when on
