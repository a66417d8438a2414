"""lm-evaluation-harness against `ayar serve` on a real fine-tune: its `local-completions` model through the
server, and its own `hf` model with `peft=` on the same weights, on ayar's general probe written as an
lm-eval task (`ayar_general`, offline). Reports both accuracies, the largest difference between the two
log-likelihoods of any answer option, and how many questions the two rank alike.

    .venv/bin/python bench/served_lm_eval.py runs/quickstart
    .venv/bin/python bench/served_lm_eval.py runs/quickstart --max-questions 80 --json out.json

The server is `ayar serve` in a child process on 127.0.0.1 (the same as bench/serve_bench.py starts).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from serve_bench import free_port, start_server  # bench/ is on sys.path when a script there runs


def adapter_base(model_dir: Path) -> str:
    """The base model an adapter folder names (its adapter_config.json)."""
    return json.loads((model_dir / "adapter_config.json").read_text(encoding="utf-8"))["base_model_name_or_path"]


def evaluate(name: str, args: dict[str, Any], include: Path) -> tuple[dict[str, Any], list[list[float]], float]:
    """(the task's results, each question's option log-likelihoods, seconds) of one lm-eval model."""
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from ayar.eval.benchmarks import PROBE_TASK

    started = time.perf_counter()
    run = simple_evaluate(model=name, model_args=args, tasks=[PROBE_TASK], log_samples=True, batch_size=1,
                         task_manager=TaskManager(include_path=str(include)))
    samples = sorted(run["samples"][PROBE_TASK], key=lambda s: s["doc_id"])
    likelihoods = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    return run["results"][PROBE_TASK], likelihoods, time.perf_counter() - started


def compare(run: Path, max_questions: int | None) -> dict[str, Any]:
    from ayar.eval.benchmarks import write_probe_task

    model_dir = run / "model"
    include = write_probe_task(Path(tempfile.mkdtemp(prefix="lm_eval_")) / "tasks", max_questions)
    port = free_port()
    server = start_server(run, port, 64, 8)
    try:
        served = evaluate("local-completions", {"model": "bench", "base_url": f"http://127.0.0.1:{port}/v1/completions",
                                                "tokenizer": str(model_dir), "tokenized_requests": True,
                                                "num_concurrent": 1, "max_retries": 1}, include)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
    direct = evaluate("hf", {"pretrained": adapter_base(model_dir), "peft": str(model_dir), "dtype": "float32",
                             "device": "cpu"}, include)
    gaps = [abs(a - b) for x, y in zip(served[1], direct[1], strict=True) for a, b in zip(x, y, strict=True)]
    alike = sum(x.index(max(x)) == y.index(max(y)) for x, y in zip(served[1], direct[1], strict=True))
    figures = {name: {k: v for k, v in result.items() if k.startswith("acc")}
               for name, result in (("served", served[0]), ("hf", direct[0]))}
    return {"run": str(run), "questions": len(served[1]), "options": len(gaps),
            "largest_loglikelihood_gap": max(gaps), "same_top_option": alike, "results": figures,
            "seconds": {"served": round(served[2], 1), "hf": round(direct[2], 1)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="a run folder whose model is a LoRA adapter")
    parser.add_argument("--max-questions", type=int, help="probe questions (default: all with options)")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    report = compare(args.run, args.max_questions)
    print(json.dumps(report, indent=1))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
