"""Load test of `ayar serve` on loopback, alone or side by side with llama.cpp on the same fine-tune.

    .venv/bin/python bench/serve_bench.py                      # 32 clients, 20 s, a tiny scratch model
    .venv/bin/python bench/serve_bench.py --model runs/x --clients 8 --seconds 30 --json out.json
    .venv/bin/python bench/serve_bench.py --model runs/quickstart --compare   # ayar vs llama.cpp f16 and q8_0

The servers run as child processes on 127.0.0.1 only; the benchmark never talks to another host.
Reports requests/s, generated tokens/s, p50/p95/p99 latency and failed requests (any non-200 or error).
With --compare it exports the model to GGUF (f16 and q8_0) with `ayar export`, serves each with
llama-cpp-python's OpenAI-compatible server (needs its server extras: pydantic-settings, sse-starlette,
starlette-context; in ayar's dev extra) and with `ayar serve --engine llamacpp`, beside `ayar serve`'s
transformers engine on the model folder, and measures every server alike with the same threads:
single-stream decode tokens/s and time to first token (streamed), then throughput at 1, 8 and 32
concurrent clients.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

PROMPTS = ["Add 12 and 30.", "Write the word 'river' backwards.", "Kelimeyi büyük harfle yaz: kitap",
           "Write the date 2024-05-17 in words.", "What is a list comprehension?"]


def build_tiny_model(out: Path) -> Path:
    """A 2-layer, 32-wide Llama with a 512-token BPE vocabulary and the alpaca chat template."""
    from ayar.data.templates import set_template
    from ayar.models.scratch import build_model, pydoc_topics_text, train_tokenizer
    from ayar.recipe import ScratchModelConfig, TokenizerTrainConfig

    tokenizer = train_tokenizer(pydoc_topics_text()[:200_000], TokenizerTrainConfig(vocab_size=512))
    set_template(tokenizer, "alpaca")
    build_model(ScratchModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                   context_length=256), tokenizer, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: Path, port: int, max_queue: int, max_batch: int, *extra: str) -> subprocess.Popen:
    """`ayar serve` (``extra``: more flags, such as ``--engine llamacpp --threads 2``)."""
    log = tempfile.TemporaryFile()  # noqa: SIM115 (open as long as the server runs; closed with the process object)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ayar.serve", str(model), "--host", "127.0.0.1", "--port", str(port),
         "--served-model-name", "bench", "--max-queue", str(max_queue), "--max-batch", str(max_batch), *extra],
        stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    proc.error_log = log  # shown if the server exits before it is ready: a run on another machine can say why
    return wait_ready(proc, port, "/readyz")


def start_llama_cpp(gguf: Path, port: int, threads: int) -> subprocess.Popen:
    """llama-cpp-python's OpenAI-compatible server on the GGUF file (its chat template from the file)."""
    return wait_ready(subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1", "--port", str(port),
         "--model_alias", "bench", "--n_threads", str(threads), "--n_threads_batch", str(threads),
         "--n_ctx", "2048", "--verbose", "false"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True), port, "/v1/models")


def wait_ready(proc: subprocess.Popen, port: int, probe: str) -> subprocess.Popen:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}{server_error(proc)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit("server not ready in 180 s")


def server_error(proc: subprocess.Popen) -> str:
    """The last lines the server wrote to stderr, where start_server kept them."""
    log = getattr(proc, "error_log", None)
    if log is None:
        return ""
    log.seek(0)
    lines = log.read().decode(errors="replace").strip().splitlines()[-5:]
    return ": " + " / ".join(lines) if lines else ""


def stop_server(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)  # the drain path: everything has finished by now
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def single_stream(port: int, max_tokens: int, rounds: int = 3) -> dict[str, float]:
    """Time to first token and decode tokens/s of one streamed greedy request at a time (best of rounds).

    Decode speed counts the streamed content chunks after the first over the time after it: each server
    streams a chunk per generated token.
    """
    best: dict[str, float] = {}
    for n in range(rounds):
        body = {"model": "bench", "max_tokens": max_tokens, "temperature": 0.0, "stream": True,
                "messages": [{"role": "user", "content": PROMPTS[n % len(PROMPTS)]}]}
        started, first, chunks = time.monotonic(), None, 0
        with httpx.stream("POST", f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=300) as r:
            for line in r.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    first = first or time.monotonic()
                    chunks += 1
        end = time.monotonic()
        if first is None or chunks < 2:
            continue
        figures = {"ttft_ms": (first - started) * 1000, "decode_tokens_per_s": (chunks - 1) / (end - first),
                   "streamed_tokens": chunks}
        if not best or figures["decode_tokens_per_s"] > best["decode_tokens_per_s"]:
            best = figures
    return {k: round(v, 1) for k, v in best.items()}


def compare(model: Path, seconds: float, max_tokens: int, threads: int) -> dict[str, dict]:
    """ayar serve (transformers engine, and llama.cpp engine on each GGUF) vs llama-cpp-python's own server
    (f16, q8_0) on the same model, one server at a time, measured alike, every server with ``threads`` threads."""
    from ayar.export import export_model

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        servers: dict[str, tuple[str, Path]] = {"ayar": ("ayar", Path(model))}
        for dtype in ("f16", "q8_0"):
            gguf = export_model(model, Path(tmp) / dtype, "gguf", gguf_dtype=dtype)
            servers[f"llama.cpp-{dtype}"] = ("llama.cpp", gguf)
            servers[f"ayar-llamacpp-{dtype}"] = ("ayar-llamacpp", gguf)
        for name, (kind, path) in servers.items():
            port = free_port()
            if kind == "llama.cpp":
                proc = start_llama_cpp(path, port, threads)
            else:
                engine = "llamacpp" if kind == "ayar-llamacpp" else "transformers"
                proc = start_server(path, port, 128, 32, "--engine", engine, "--threads", str(threads))
            try:
                row = {"single_stream": single_stream(port, max_tokens)}
                for clients in (1, 8, 32):
                    row[f"clients_{clients}"] = asyncio.run(run_load(port, clients, seconds, max_tokens))
            finally:
                stop_server(proc)
            results[name] = row
            print(name, json.dumps(row), flush=True)
    return results


def render_compare(results: dict[str, dict]) -> str:
    lines = ["| server | TTFT ms | decode tok/s (1 stream) | tok/s at 1 | at 8 | at 32 clients | failed |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in results.items():
        single = row["single_stream"]
        loads = [row[f"clients_{c}"] for c in (1, 8, 32)]
        lines.append(f"| {name} | {single.get('ttft_ms', '-')} | {single.get('decode_tokens_per_s', '-')} | "
                     + " | ".join(str(x["generated_tokens_per_s"]) for x in loads)
                     + f" | {sum(x['failed'] for x in loads)} |")
    lines += ["", *goal_lines(results)]
    return "\n".join(lines)


def goal_lines(results: dict[str, dict]) -> list[str]:
    """The goal of issue 18: ayar's llama.cpp engine within 1.2x of llama.cpp's own server, per GGUF type."""
    lines = []
    for dtype in ("f16", "q8_0"):
        ours, theirs = results.get(f"ayar-llamacpp-{dtype}"), results.get(f"llama.cpp-{dtype}")
        if not ours or not theirs:
            continue
        pairs = [("single-stream decode", ours["single_stream"].get("decode_tokens_per_s"),
                  theirs["single_stream"].get("decode_tokens_per_s"))]
        pairs += [(f"{c} clients", ours[f"clients_{c}"]["generated_tokens_per_s"],
                   theirs[f"clients_{c}"]["generated_tokens_per_s"]) for c in (1, 8, 32)]
        shown = ", ".join(f"{what} {theirs_v / ours_v:.2f}x" if ours_v and theirs_v else f"{what} -"
                          for what, ours_v, theirs_v in pairs)
        lines.append(f"llama.cpp-{dtype} tokens/s over ayar-llamacpp-{dtype} (goal <= 1.2x): {shown}")
    return lines


async def client_loop(http: httpx.AsyncClient, index: int, stop_at: float, max_tokens: int,
                      results: list[tuple[float, int, bool]]) -> None:
    """One client: send a chat request, wait for the answer, repeat until the time is up."""
    n = 0
    while time.monotonic() < stop_at:
        body = {"model": "bench", "max_tokens": max_tokens, "temperature": 0.7,
                "messages": [{"role": "user", "content": PROMPTS[(index + n) % len(PROMPTS)]}]}
        started = time.monotonic()
        try:
            response = await http.post("/v1/chat/completions", json=body)
            ok = response.status_code == 200
            tokens = response.json()["usage"]["completion_tokens"] if ok else 0
        except (httpx.HTTPError, ValueError, KeyError):
            ok, tokens = False, 0
        results.append((time.monotonic() - started, tokens, ok))
        n += 1


async def run_load(port: int, clients: int, seconds: float, max_tokens: int) -> dict[str, float]:
    results: list[tuple[float, int, bool]] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120, limits=limits) as http:
        started = time.monotonic()
        await asyncio.gather(*(client_loop(http, i, started + seconds, max_tokens, results)
                               for i in range(clients)))
        wall = time.monotonic() - started
    latencies = np.array([r[0] for r in results if r[2]]) * 1000
    ok = int(sum(r[2] for r in results))
    return {
        "clients": clients, "seconds": round(wall, 2), "requests": len(results), "failed": len(results) - ok,
        "requests_per_s": round(ok / wall, 2),
        "generated_tokens_per_s": round(sum(r[1] for r in results) / wall, 1),
        **{f"p{q}_ms": round(float(np.percentile(latencies, q)), 1) if ok else float("nan") for q in (50, 95, 99)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="Model/run folder (default: a tiny scratch model).")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--max-batch", type=int, default=32, help="The server's dynamic batch size.")
    parser.add_argument("--json", type=Path, help="Also write the figures here.")
    parser.add_argument("--compare", action="store_true", help="ayar serve vs llama.cpp (f16, q8_0) on --model.")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="Threads of every server (--compare).")
    args = parser.parse_args()
    if not 1 <= args.clients <= 256 or not 1 <= args.seconds <= 600:
        raise SystemExit("--clients must be 1..256 and --seconds 1..600 (a bounded load test)")
    if args.compare:
        if args.model is None:
            raise SystemExit("--compare needs --model (a run or model folder that exports to GGUF)")
        results = compare(args.model, args.seconds, args.max_tokens, args.threads)
        print(render_compare(results))
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        return
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_tiny_model(Path(tmp) / "tiny")
        port = free_port()
        proc = start_server(model, port, max(64, 2 * args.clients), args.max_batch)
        try:
            figures = asyncio.run(run_load(port, args.clients, args.seconds, args.max_tokens))
        finally:
            stop_server(proc)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    if figures["failed"]:
        raise SystemExit(f"{figures['failed']} failed requests")


if __name__ == "__main__":
    main()
