"""The server as a real process on 127.0.0.1: the official openai client, client disconnects, SIGTERM drain."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

API_KEY = "test-key-123"


@pytest.fixture(scope="module")
def served_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tokenizer with the alpaca chat template and a 2-layer Llama with 2048 positions."""
    from ayar.data.templates import set_template
    from ayar.models.load import load_tokenizer
    from ayar.models.scratch import build_model
    from ayar.recipe import ScratchModelConfig

    out = tmp_path_factory.mktemp("served_model")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    set_template(tokenizer, "alpaca")
    build_model(ScratchModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                   context_length=2048), tokenizer, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model_dir: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    """Start `python -m ayar.serve` in its own process group and wait until /readyz says ready."""
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ayar.serve", str(model_dir), "--port", str(port), "--served-model-name", "tiny",
         *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
        env={**os.environ, "AYAR_API_KEY": API_KEY},
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return proc, base
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    stop_server(proc)
    raise RuntimeError("server did not become ready in 90 s")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@pytest.fixture(scope="module")
def server(served_model_dir: Path) -> Iterator[str]:
    proc, base = start_server(served_model_dir)
    yield base
    stop_server(proc)


def test_openai_client_chat_and_completions(server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=30)
    assert [m.id for m in client.models.list()] == ["tiny"]
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Merhaba"}],
                                          max_tokens=8, temperature=0, extra_body={"min_tokens": 8})
    assert chat.choices[0].finish_reason == "length" and chat.usage.completion_tokens == 8
    assert isinstance(chat.choices[0].message.content, str) and chat.choices[0].message.content
    text = client.completions.create(model="tiny", prompt="def main", max_tokens=4, temperature=0)
    assert text.choices[0].text and text.usage.prompt_tokens > 0


def test_openai_client_streaming_equals_non_streaming(server: str) -> None:
    from openai import OpenAI

    client = OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=30)
    args = {"model": "tiny", "messages": [{"role": "user", "content": "Add 2 and 3."}], "max_tokens": 16,
            "temperature": 0.8, "seed": 11}
    whole = client.chat.completions.create(**args).choices[0].message.content
    stream = client.chat.completions.create(**args, stream=True)
    parts, finishes = [], []
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finishes.append(chunk.choices[0].finish_reason)
    assert "".join(parts) == whole and finishes[-1] in ("stop", "length")


def test_openai_client_parse_gets_valid_objects_and_logprobs(server: str) -> None:
    from typing import Literal

    from openai import OpenAI
    from pydantic import BaseModel, Field

    class Weather(BaseModel):
        sunny: bool
        sky: Literal["clear", "cloudy", "rain"]
        degrees: int = Field(ge=-40, le=50)

    client = OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0, timeout=30)
    for prompt in ("Bugün İzmir'de hava nasıl?", "What is the weather in Izmir today?"):
        parsed = client.chat.completions.parse(model="tiny", messages=[{"role": "user", "content": prompt}],
                                               response_format=Weather, max_tokens=60, temperature=1.0, seed=3)
        assert isinstance(parsed.choices[0].message.parsed, Weather)
    chat = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Merhaba"}],
                                          max_tokens=4, logprobs=True, top_logprobs=2, n=2, seed=1)
    assert len(chat.choices) == 2 and all(len(c.logprobs.content[0].top_logprobs) == 2 for c in chat.choices)
    scored = client.completions.create(model="tiny", prompt=[[5, 6, 7, 8]], max_tokens=0, echo=True, logprobs=1)
    assert scored.choices[0].logprobs.token_logprobs[0] is None
    assert all(v < 0 for v in scored.choices[0].logprobs.token_logprobs[1:])


def test_openai_client_sees_auth_errors(server: str) -> None:
    from openai import AuthenticationError, NotFoundError, OpenAI

    with pytest.raises(AuthenticationError):
        OpenAI(base_url=f"{server}/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(NotFoundError, match="does not exist"):
        OpenAI(base_url=f"{server}/v1", api_key=API_KEY, max_retries=0).chat.completions.create(
            model="gpt-4", messages=[{"role": "user", "content": "hi"}])


def _metric(base: str, name: str) -> float:
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).text
    lines = [line for line in text.splitlines() if line.startswith(name)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0


def test_client_disconnect_mid_stream_stops_generation(server: str) -> None:
    before = _metric(server, 'ayar_generated_tokens_total{model="tiny"}')
    body = {"model": "tiny", "prompt": "x", "max_tokens": 1800, "min_tokens": 1800, "stream": True}
    with httpx.stream("POST", f"{server}/v1/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {API_KEY}"}) as response:
        for i, _ in enumerate(response.iter_lines()):
            if i > 4:
                break  # leave: the context manager closes the connection mid-stream
    deadline = time.monotonic() + 20
    while _metric(server, "ayar_generations_cancelled_total") < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _metric(server, "ayar_generations_cancelled_total") == 1
    time.sleep(0.3)
    # the job ended as cancelled, so its tokens were never added to the generated-tokens counter
    assert _metric(server, 'ayar_generated_tokens_total{model="tiny"}') == before
    assert _metric(server, "ayar_queue_depth") == 0


def _tokens_for_seconds(base: str, auth: dict[str, str], seconds: float) -> int:
    """How many tokens this (shared, maybe busy) machine generates in about ``seconds``."""
    started = time.monotonic()
    httpx.post(f"{base}/v1/completions", json={"model": "tiny", "prompt": "x", "max_tokens": 40, "min_tokens": 40},
               headers=auth, timeout=60)
    per_token = (time.monotonic() - started) / 40
    return max(40, min(1900, int(seconds / per_token)))


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests_and_exits_cleanly(served_model_dir: Path) -> None:
    proc, base = start_server(served_model_dir, "--drain-timeout", "60")
    auth = {"Authorization": f"Bearer {API_KEY}"}
    try:
        lines: list[str] = []
        first_chunk = threading.Event()
        n_tokens = _tokens_for_seconds(base, auth, 4.0)

        def stream_long() -> None:
            body = {"model": "tiny", "prompt": "x", "max_tokens": n_tokens, "min_tokens": n_tokens, "stream": True}
            with httpx.stream("POST", f"{base}/v1/completions", json=body, headers=auth, timeout=60) as response:
                for line in response.iter_lines():
                    if line:
                        lines.append(line)
                        first_chunk.set()

        reader = threading.Thread(target=stream_long)
        reader.start()
        assert first_chunk.wait(30)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        refused = httpx.post(f"{base}/v1/completions", json={"model": "tiny", "prompt": "y"}, headers=auth)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "draining"
        assert httpx.get(f"{base}/readyz").status_code == 503
        assert reader.is_alive(), "the in-flight stream ended before the drain was observed"
        reader.join(60)
        assert lines[-1] == "data: [DONE]"  # the in-flight request finished in full
        assert '"finish_reason": "length"' in lines[-2]
        assert proc.wait(timeout=20) == 0
        with pytest.raises(ProcessLookupError):  # nothing of the process group is left
            os.killpg(proc.pid, 0)
    finally:
        stop_server(proc)


_MC_TASK = """task: serve_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_local_completions_scores_as_its_hf_model_does(server: str, served_model_dir: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """lm-eval's API model scores multiple choice through the server exactly as lm-eval's own hf model does on
    the same weights (token-id prompts, echo, logprobs 1, max_tokens 1)."""
    import json

    from lm_eval import simple_evaluate  # the benchmarks extra, which the dev extra (make test) installs
    from lm_eval.tasks import TaskManager

    rows = [{"question": f"Question {i}: which keyword defines a function?", "choices": ["def", "class", "lambda x"],
             "answer": i % 3} for i in range(6)]
    (tmp_path / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    (tmp_path / "serve_mc.yaml").write_text(_MC_TASK.format(data=tmp_path / "mc.jsonl"))
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    tasks = TaskManager(include_path=str(tmp_path))
    models = {"local-completions": {"model": "tiny", "base_url": f"{server}/v1/completions", "num_concurrent": 1,
                                    "tokenizer": str(served_model_dir), "tokenized_requests": True, "max_retries": 1},
              "hf": {"pretrained": str(served_model_dir), "dtype": "float32", "device": "cpu"}}
    runs = {name: simple_evaluate(model=name, model_args=args, tasks=["serve_mc"], task_manager=tasks,
                                  log_samples=True, batch_size=1) for name, args in models.items()}
    served, direct = ([s["resps"] for s in runs[name]["samples"]["serve_mc"]] for name in models)
    pairs = [(a[0], b[0]) for x, y in zip(served, direct, strict=True) for a, b in zip(x, y, strict=True)]
    assert len(pairs) == 18
    for (served_ll, served_greedy), (direct_ll, direct_greedy) in pairs:
        assert served_ll == pytest.approx(direct_ll, abs=1e-4) and served_greedy == direct_greedy
    assert runs["local-completions"]["results"]["serve_mc"]["acc,none"] == runs["hf"]["results"]["serve_mc"]["acc,none"]
