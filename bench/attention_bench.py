"""Attention alone, by row length: where the plain matmul-softmax path and SDPA cross on this CPU.

`ayar.train.attention` sends attention calls of at most ``SHORT_ROWS`` tokens a row through transformers'
plain path when training in bf16 on a CPU, longer ones through SDPA. That threshold was measured on one
CPU kind; this script measures the crossover on the machine it runs on: forward and backward over
SmolLM2-135M's 30 attention layers (9 query heads of 64, 3 key/value heads, a causal mask), a batch of
``--tokens`` tokens cut into rows of each length, for each path and precision.

    .venv/bin/python bench/attention_bench.py [--lengths 32 64 96 128 160 192 256 512] [--repeats 3]

Writes bench/results/attention_bench.md (and .json); --out names them.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import torch
from machine import machine_info, machine_line, write_results  # bench/machine.py (its folder is on sys.path)
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.models.llama.modeling_llama import eager_attention_forward

LAYERS, HEADS, KV_HEADS, HEAD_DIM = 30, 9, 3, 64  # SmolLM2-135M


class AttentionShape(torch.nn.Module):
    """What transformers' attention functions read off the attention module."""

    num_key_value_groups = HEADS // KV_HEADS
    is_causal = True
    training = True


def causal_mask(length: int, dtype: torch.dtype) -> torch.Tensor:
    """The additive float mask both paths take (what ayar's short-row attention passes them)."""
    blocked = torch.ones(length, length, dtype=torch.bool).triu(1)
    return torch.zeros(length, length, dtype=dtype).masked_fill(blocked, torch.finfo(dtype).min)[None, None]


def seconds_for(path: str, rows: int, length: int, dtype: torch.dtype, repeats: int) -> float:
    """Best of ``repeats`` of forward and backward over every layer; each layer has its own inputs."""
    forward = eager_attention_forward if path == "plain" else sdpa_attention_forward
    module, mask = AttentionShape(), causal_mask(length, dtype)
    q = [torch.randn(rows, HEADS, length, HEAD_DIM, dtype=dtype, requires_grad=True) for _ in range(LAYERS)]
    kv = [torch.randn(rows, KV_HEADS, length, HEAD_DIM, dtype=dtype, requires_grad=True) for _ in range(2 * LAYERS)]
    best = float("inf")
    for _ in range(repeats + 1):  # the first pass warms oneDNN's kernels for this shape
        started = time.perf_counter()
        for layer in range(LAYERS):
            out, _ = forward(module, q[layer], kv[2 * layer], kv[2 * layer + 1], mask, scaling=HEAD_DIM ** -0.5,
                             dropout=0.0)
            out.float().sum().backward()
        best = min(best, time.perf_counter() - started)
    return best


def measure(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows_out = []
    for length in args.lengths:
        rows = max(1, args.tokens // length)
        row: dict[str, Any] = {"length": length, "rows": rows}
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            for path in ("plain", "sdpa"):
                row[f"{path}_{dtype_name}"] = seconds_for(path, rows, length, dtype, args.repeats)
        rows_out.append(row)
        print(row, flush=True)
    return {"machine": machine_info(args.threads),
            "tokens": args.tokens, "repeats": args.repeats, "dtypes": args.dtypes, "rows": rows_out}


def render(result: dict[str, Any]) -> str:
    m = result["machine"]
    names = [f"{path}_{d}" for d in result["dtypes"] for path in ("plain", "sdpa")]
    lines = ["# Attention alone by row length: the plain path against SDPA", "",
             f"{machine_line(m)} Forward and backward over SmolLM2-135M's {LAYERS} "
             f"attention layers, about {result['tokens']} tokens a batch cut into rows of each length, best of "
             f"{result['repeats']}, seconds.", "",
             "| tokens a row | rows | " + " | ".join(names) + " | faster in bf16 |",
             "|---:|---:|" + "---:|" * len(names) + "---|"]
    for row in result["rows"]:
        faster = ""
        if "plain_bfloat16" in row:
            faster = "plain" if row["plain_bfloat16"] < row["sdpa_bfloat16"] else "sdpa"
        cells = " | ".join(f"{row[n]:.3f}" for n in names)
        lines.append(f"| {row['length']} | {row['rows']} | {cells} | {faster} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 96, 128, 160, 192, 256, 512])
    parser.add_argument("--tokens", type=int, default=1536)
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", default="attention_bench")
    args = parser.parse_args()
    result = measure(args)
    write_results(args.out, result, render(result))


if __name__ == "__main__":
    main()
