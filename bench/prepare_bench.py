"""Benchmark `ayar prepare`: records per second and peak RSS on generated alpaca data.

The data: N records, of which 10% exact duplicates (half of them differing only in spacing),
10% near duplicates (one word changed), 5% with PII and 1% malformed lines. Each configuration
runs in a fresh process, so its peak RSS is its own. Besides wall time, every run reports its CPU
time (main process and workers), which a shared machine inflates far less than wall time, and the
rate that CPU time gives on dedicated cores. ``--compare-src`` runs the same configurations with
another checkout's ``src`` too (before/after figures from one run on one machine):

    .venv/bin/python bench/prepare_bench.py --n 1000000 --num-proc 2

Writes bench/results/prepare_bench.json and .md (``--out`` names them).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from machine import cpu_name  # bench/machine.py: the script folder is on sys.path

RESULTS = Path(__file__).resolve().parent / "results"
GOALS = {"exact": 20_000, "near": 5_000}  # records/s on 2 cores (issue #3)
RSS_GOAL_MB = 4096
THIS_TREE = "this tree"

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
        peak_rss_main = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # before hashing reads the files
        digest = hashlib.sha256()  # the outputs, to show that two code versions give the same files
        for name in ("train", "validation", "test", "removed", "rejects"):
            with Path(out, f"{name}.jsonl").open("rb") as f:
                while block := f.read(1 << 20):
                    digest.update(block)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers_cpu = children.ru_utime + children.ru_stime
    card = prepared.card
    n = card["records_in"]
    # The CPU time spread over dedicated cores: no faster than the main process alone or than the
    # workers' share, and no faster than all of it over the cores there are.
    cores = min(num_proc + 1, 2)
    critical = max(main_cpu, workers_cpu / num_proc if num_proc > 1 else 0.0, (main_cpu + workers_cpu) / cores)
    return {
        "near_dedup": near, "num_proc": num_proc, "records_in": n, "seconds": round(seconds, 1),
        "records_per_s": round(n / seconds), "kept": card["kept"], "removed": card["removed"],
        "rejected": card["rejected"], "pii": card["pii"],
        "cpu_s_main": round(main_cpu, 1), "cpu_s_workers": round(workers_cpu, 1),
        "cpu_us_per_record": round((main_cpu + workers_cpu) / n * 1e6, 1),
        "records_per_s_from_cpu_time": round(n / critical),
        "peak_rss_mb_main": round(peak_rss_main / 1024),
        "peak_rss_mb_worker": round(children.ru_maxrss / 1024),
        "outputs_sha256": digest.hexdigest()[:16],
    }


def run_config(data: Path, args: argparse.Namespace, mode: str, src: Path | None, label: str) -> dict:
    """One configuration in a fresh process (``src``: the ayar source tree to import, if not this one)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if src is not None:
        env["PYTHONPATH"] = str(src)
    cmd = [sys.executable, __file__, "--n", str(args.n), "--num-proc", str(args.num_proc), "--data", str(data),
           "--_run", mode]
    load_before = os.getloadavg()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
    result = json.loads(out)
    result.update(code=label, mode=mode,
                  load_avg_before=[round(x, 2) for x in load_before],
                  load_avg_after=[round(x, 2) for x in os.getloadavg()], goal_records_per_s=GOALS[mode])
    result["rss_ok"] = max(result["peak_rss_mb_main"], result["peak_rss_mb_worker"]) < RSS_GOAL_MB
    return result


def render(report: dict) -> str:
    """The results as Markdown."""
    m = report["machine"]
    lines = [
        "# Data preparation benchmark", "",
        f"{report['date']}. Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}; 1-minute load average "
        f"{m['load_avg_before'][0]} before, {m['load_avg_after'][0]} after, each run's own in the JSON (the "
        "benchmark itself keeps ~2-3 processes busy; on a shared machine other jobs slow the wall-time rate, "
        "and the CPU-time rate is the steadier measure).",
        f"Data: {report['records']:,} generated alpaca records (10% exact and 10% near duplicates, 5% PII, "
        f"1% malformed), `data.num_proc` {report['num_proc']}.", "",
        "| code | configuration | records/s (wall) | records/s from CPU time, 2 dedicated cores | CPU µs/record "
        "(main + workers) | peak RSS MB (main / worker) | kept | removed | rejected | outputs sha256 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        config = "clean + exact dedup + PII" + (" + near dedup" if r["near_dedup"] else "")
        lines.append(
            f"| {r['code']} | {config} | {r['records_per_s']:,} | {r['records_per_s_from_cpu_time']:,} | "
            f"{r['cpu_us_per_record']} ({r['cpu_s_main']} s + {r['cpu_s_workers']} s) | "
            f"{r['peak_rss_mb_main']:,} / {r['peak_rss_mb_worker']:,} | {r['kept']:,} | "
            f"{sum(r['removed'].values()):,} | {r['rejected']:,} | `{r.get('outputs_sha256', '-')}` |")
    lines += ["", "## Goals (this tree)", ""]
    for r in report["rows"]:
        if r["code"] != THIS_TREE:
            continue
        goal = r["goal_records_per_s"]
        lines.append(f"- {r['mode']}: {r['records_per_s']:,}/s wall ({'met' if r['records_per_s'] >= goal else 'NOT met'}"
                     f"), {r['records_per_s_from_cpu_time']:,}/s from CPU time "
                     f"({'met' if r['records_per_s_from_cpu_time'] >= goal else 'NOT met'}); goal {goal:,}/s. "
                     f"Peak RSS {max(r['peak_rss_mb_main'], r['peak_rss_mb_worker']):,} MB "
                     f"(goal < {RSS_GOAL_MB:,}: {'met' if r['rss_ok'] else 'NOT met'}).")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="records to generate")
    parser.add_argument("--num-proc", type=int, default=2, help="worker processes (data.num_proc)")
    parser.add_argument("--data", type=Path, default=None, help="reuse or write the data file here")
    parser.add_argument("--only", choices=["exact", "near"], default=None, help="run one configuration")
    parser.add_argument("--compare-src", type=Path, default=None,
                        help="also run another checkout's src folder (e.g. a `git worktree` of an older commit)")
    parser.add_argument("--compare-label", default=None, help="the name of --compare-src in the results")
    parser.add_argument("--out", default="prepare_bench", help="results name under bench/results (''= none)")
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
    load_before = [round(x, 2) for x in os.getloadavg()]
    print(f"load average before: {load_before} on {os.cpu_count()} CPUs")
    rows = []
    for mode in [args.only] if args.only else ["exact", "near"]:
        for src in ([args.compare_src] if args.compare_src else []) + [None]:
            label = THIS_TREE if src is None else args.compare_label or str(src)
            rows.append(run_config(data, args, mode, src, label))
            print(json.dumps(rows[-1], ensure_ascii=False), flush=True)
    report = {
        "date": datetime.date.today().isoformat(), "records": args.n, "num_proc": args.num_proc,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "python": platform.python_version(),
                    "load_avg_before": load_before, "load_avg_after": [round(x, 2) for x in os.getloadavg()]},
        "rows": rows,
    }
    if args.out:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n")
        (RESULTS / f"{args.out}.md").write_text(render(report), encoding="utf-8")
        print(f"wrote {RESULTS / args.out}.json and .md")


if __name__ == "__main__":
    main()
