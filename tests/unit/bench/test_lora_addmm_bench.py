"""The addmm benchmark times the function peft computes: its candidate forward gives peft's output and gradients."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import lora_addmm_bench


def test_candidate_forward_equals_peft_and_switches_back() -> None:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2)
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "up_proj"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # away from zero, so the update counts
            torch.nn.init.normal_(param, std=0.1)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(1))

    def loss_and_grads() -> tuple[torch.Tensor, list[torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in model.parameters() if p.requires_grad]

    peft_loss, peft_grads = loss_and_grads()
    lora_addmm_bench.use_forward(model, "addmm")
    assert sum("forward" in m.__dict__ for m in model.modules()) == 4  # two target modules in each of two layers
    loss, grads = loss_and_grads()
    torch.testing.assert_close(loss, peft_loss, rtol=1e-6, atol=0)
    for grad, peft_grad in zip(grads, peft_grads, strict=True):
        torch.testing.assert_close(grad, peft_grad, rtol=1e-5, atol=1e-7)
    lora_addmm_bench.use_forward(model, "peft")
    assert not any("forward" in m.__dict__ for m in model.modules())
