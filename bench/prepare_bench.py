"""Benchmark `ayar prepare`: records per second and peak RSS on generated alpaca data.

The data: N records, of which 10% exact duplicates (half of them differing only in spacing),
10% near duplicates (one word changed), 5% with PII and 1% malformed lines. Each configuration
runs in a fresh process, so its peak RSS is its own:

    .venv/bin/python bench/prepare_bench.py --n 1000000 --num-proc 2
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SYLLABLES = ["ka", "le", "mi", "ro", "tu", "şe", "çi", "ğa", "ıl", "ön", "ür", "sa", "de", "ve", "bi", "zo", "ya",
             "ne", "po", "lu", "an", "er", "in", "ok", "us", "ta", "ri", "go", "he", "fı"]
PII = ["Bana ali.veli{i}@example.com adresinden yazın.", "Telefon: 0532 123 45 67.",
       "IBAN: TR33 0006 1005 1978 6457 8413 26.", "T.C. Kimlik No 10000000146.", "Sunucu 192.168.1.{k}."]


def _vocab(size: int, rng: np.random.Generator) -> list[str]:
    words = {"".join(rng.choice(SYLLABLES, size=int(rng.integers(2, 5)))) for _ in range(size * 2)}
    return sorted(words)[:size]


def generate(path: Path, n: int, seed: int = 0) -> None:
    """Write the benchmark's JSONL file."""
    rng = np.random.default_rng(seed)
    vocab = np.array(_vocab(20_000, rng))
    kinds = rng.choice(5, size=n, p=[0.74, 0.10, 0.10, 0.05, 0.01])  # unique, exact, near, pii, malformed
    lengths = rng.integers(8, 14, size=(n, 3)) * np.array([1, 3, 2])
    base: list[dict] = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            kind = kinds[i]
            if kind in (1, 2) and base:
                record = dict(base[int(rng.integers(len(base)))])
                record["id"] = f"b{i}"
                if kind == 1 and i % 2:  # the same after whitespace normalization
                    record["instruction"] = "  " + record["instruction"].replace(" ", "   ") + " "
                elif kind == 2:
                    words = record["input"].split()
                    words[int(rng.integers(len(words)))] = str(vocab[int(rng.integers(len(vocab)))])
                    record["input"] = " ".join(words)
            else:
                parts = [" ".join(vocab[rng.integers(len(vocab), size=k)]) for k in lengths[i]]
                record = {"id": f"b{i}", "instruction": parts[0].capitalize() + ".", "input": parts[1],
                          "output": parts[2] + "."}
                if kind == 3:
                    record["output"] += " " + PII[i % len(PII)].format(i=i, k=i % 250)
                if len(base) < 200_000:
                    base.append(record)
            line = json.dumps(record, ensure_ascii=False)
            f.write((line[: len(line) // 2] if kind == 4 else line) + "\n")


def run_one(data: Path, near: bool, num_proc: int) -> dict:
    """Prepare ``data`` once (in this process) and return the figures."""
    from ayar.data.prepare import prepare
    from ayar.recipe import DataConfig

    cfg = DataConfig.model_validate({
        "inputs": [{"path": str(data)}], "format": "alpaca", "num_proc": num_proc, "save_arrow": False,
        "dedup": {"near": near},
    })
    with tempfile.TemporaryDirectory() as out:
        start, cpu_start = time.perf_counter(), time.process_time()
        prepared = prepare(cfg, Path(out), seed=0)
        seconds = time.perf_counter() - start
        main_cpu = time.process_time() - cpu_start
    workers_cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = workers_cpu.ru_utime + workers_cpu.ru_stime
    card = prepared.card
    return {
        "near_dedup": near, "num_proc": num_proc, "records_in": card["records_in"], "seconds": round(seconds, 1),
        "records_per_s": round(card["records_in"] / seconds), "kept": card["kept"], "removed": card["removed"],
        "rejected": card["rejected"], "pii": card["pii"],
        # CPU time says what the run costs when the machine is shared and wall time is not its own.
        "cpu_s_main": round(main_cpu, 1), "cpu_s_workers": round(workers_cpu, 1),
        "cpu_us_per_record": round((main_cpu + workers_cpu) / card["records_in"] * 1e6),
        "peak_rss_mb_main": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "peak_rss_mb_worker": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="records to generate")
    parser.add_argument("--num-proc", type=int, default=2, help="worker processes (data.num_proc)")
    parser.add_argument("--data", type=Path, default=None, help="reuse or write the data file here")
    parser.add_argument("--only", choices=["exact", "near"], default=None, help="run one configuration")
    parser.add_argument("--_run", choices=["exact", "near"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    data = args.data or Path(tempfile.gettempdir()) / f"ayar_bench_{args.n}.jsonl"
    if args._run:
        print(json.dumps(run_one(data, args._run == "near", args.num_proc)))
        return
    if not data.is_file():
        start = time.perf_counter()
        generate(data, args.n)
        print(f"generated {args.n} records in {time.perf_counter() - start:.0f} s: {data}")
    goals = {"exact": 20_000, "near": 5_000}
    print(f"load average before: {[round(x, 1) for x in __import__('os').getloadavg()]} on {__import__('os').cpu_count()} CPUs")
    for mode in [args.only] if args.only else ["exact", "near"]:
        cmd = [sys.executable, __file__, "--n", str(args.n), "--num-proc", str(args.num_proc), "--data", str(data),
               "--_run", mode]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        result = json.loads(out)
        result["goal_records_per_s"] = goals[mode]
        result["rss_ok"] = max(result["peak_rss_mb_main"], result["peak_rss_mb_worker"]) < 4096
        print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
