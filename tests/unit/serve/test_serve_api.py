"""The OpenAI-compatible routes through an in-process client: formats, decoding options, adapters, metrics."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "What is a list comprehension?"}]


def _chat(client: TestClient, **body: object) -> dict:
    response = client.post(CHAT, json={"model": "tiny", "messages": HELLO, **body})
    assert response.status_code == 200, response.text
    return response.json()


def _sse_events(text: str) -> list[str]:
    return [line.removeprefix("data: ") for line in text.splitlines() if line.startswith("data: ")]


def test_chat_completion_object_and_usage(make_client) -> None:
    body = _chat(make_client(), max_tokens=12, temperature=0, min_tokens=12)
    assert body["object"] == "chat.completion" and body["model"] == "tiny"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 12
    assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + 12


def test_chat_prompt_uses_the_saved_chat_template(make_client) -> None:
    from ayar.data.templates import render_prompt

    client = make_client()
    engine = client.app.state.engine
    expected = len(engine.tokenizer(render_prompt(engine.tokenizer, HELLO), add_special_tokens=False)["input_ids"])
    assert "### Response:" in render_prompt(engine.tokenizer, HELLO)
    assert _chat(client, max_tokens=1)["usage"]["prompt_tokens"] == expected


def test_stream_chunks_join_to_the_non_streamed_text(make_client) -> None:
    client = make_client()
    whole = _chat(client, max_tokens=24, temperature=0)["choices"][0]["message"]["content"]
    response = client.post(CHAT, json={"model": "tiny", "messages": HELLO, "max_tokens": 24, "temperature": 0,
                                       "stream": True, "stream_options": {"include_usage": True}})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = _sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == whole
    assert chunks[-1]["usage"]["completion_tokens"] > 0 and chunks[-1]["choices"] == []


def test_completions_route_streams_text_completion_chunks(make_client) -> None:
    response = make_client().post("/v1/completions", json={"model": "tiny", "prompt": "def main", "max_tokens": 5,
                                                           "min_tokens": 5, "stream": True})
    events = _sse_events(response.text)
    chunks = [json.loads(e) for e in events[:-1]]
    assert events[-1] == "[DONE]" and chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["object"] == "text_completion" for c in chunks)


def test_seed_makes_sampling_repeatable_and_temperature_zero_is_greedy(make_client) -> None:
    client = make_client()
    texts = [_chat(client, max_tokens=16, min_tokens=16, temperature=1.5, seed=s)["choices"][0]["message"]["content"]
             for s in (7, 7, 8)]
    assert texts[0] == texts[1] != texts[2]
    greedy = {_chat(client, max_tokens=16, temperature=0, seed=s)["choices"][0]["message"]["content"]
              for s in (1, 2)}
    assert len(greedy) == 1


def test_stop_string_cuts_the_reply(make_client) -> None:
    client = make_client()
    sampled = {"max_tokens": 40, "min_tokens": 40, "temperature": 1.0, "seed": 3}
    text = _chat(client, **sampled)["choices"][0]["message"]["content"]
    stop = text[10:13]
    assert len(stop.strip()) > 0
    body = _chat(client, **sampled, stop=["never appears", stop])
    cut = body["choices"][0]["message"]["content"]
    assert stop not in cut and text.startswith(cut) and len(cut) <= 10
    assert body["choices"][0]["finish_reason"] == "stop"


def test_each_adapter_is_served_under_its_own_name(make_client, adapter_dirs: dict[str, Path]) -> None:
    client = make_client(adapters=adapter_dirs)
    names = {m["id"] for m in client.get("/v1/models").json()["data"]}
    assert names == {"tiny", "tr", "en"}
    replies = {}
    for name in ("tiny", "tr", "en", "tiny"):
        body = client.post(CHAT, json={"model": name, "messages": HELLO, "max_tokens": 12, "min_tokens": 12,
                                       "temperature": 0}).json()
        replies.setdefault(name, set()).add(body["choices"][0]["message"]["content"])
    assert len(replies["tiny"]) == 1  # the base stays the base after an adapter ran
    assert len({next(iter(v)) for v in replies.values()}) == 3


def test_metrics_count_requests_tokens_and_latency(make_client) -> None:
    client = make_client()
    _chat(client, max_tokens=3, min_tokens=3)
    client.post(CHAT, json={"model": "nope", "messages": HELLO})
    text = client.get("/metrics").text
    assert f'ayar_requests_total{{route="{CHAT}",status="200"}} 1.0' in text
    assert f'ayar_requests_total{{route="{CHAT}",status="404"}} 1.0' in text
    assert 'ayar_generated_tokens_total{model="tiny"} 3.0' in text
    assert f'ayar_request_latency_seconds_count{{route="{CHAT}"}} 2.0' in text
    assert "ayar_queue_depth 0.0" in text


def test_readyz_waits_for_the_model_and_healthz_does_not(chat_model_dir: Path) -> None:
    from ayar.serve.app import create_app
    from ayar.serve.engine import load_engine

    release = threading.Event()

    def slow_loader():
        release.wait(10)
        return load_engine(chat_model_dir, served_name="tiny")

    with TestClient(create_app(loader=slow_loader)) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").status_code == 503
        assert client.post(CHAT, json={"model": "tiny", "messages": HELLO}).status_code == 503
        release.set()
        for _ in range(100):
            if client.get("/readyz").status_code == 200:
                break
            threading.Event().wait(0.05)
        assert client.get("/readyz").json() == {"status": "ready"}


def _collect(engine, jobs_spec: list[tuple[list[int], int]]) -> list[tuple[str, str, int]]:
    """Run jobs through the engine; returns (text, finish_reason, tokens) per job."""
    import time as _time

    from ayar.serve.engine import Job, SamplingParams

    results: list[list] = [["", None, 0] for _ in jobs_spec]
    done = threading.Event()

    def emitter(i: int):
        def emit(event: tuple) -> None:
            if event[0] == "delta":
                results[i][0] += event[1]
            else:
                results[i][1], results[i][2] = event[1], event[2]
                if all(r[1] for r in results):
                    done.set()
        return emit

    for i, (ids, max_tokens) in enumerate(jobs_spec):
        engine.submit(Job("tiny", ids, SamplingParams(max_tokens, temperature=0), _time.monotonic() + 60,
                          emit=emitter(i)))
    if not engine.alive:
        engine.start()
    assert done.wait(60)
    return [tuple(r) for r in results]


def test_batched_jobs_give_the_same_greedy_text_as_jobs_run_alone(chat_model_dir: Path) -> None:
    from ayar.serve.engine import load_engine

    engine = load_engine(chat_model_dir, served_name="tiny")
    prompts = [engine.encode_text(t) for t in ("def main", "import os\nimport sys", "x", "class Foo(Base):")]
    spec = list(zip(prompts, (5, 12, 3, 8), strict=True))
    batched = _collect(engine, spec)  # queued before the worker starts: one batch of four
    assert engine.largest_batch == 4
    alone = [_collect(engine, [job])[0] for job in spec]
    engine.stop()
    assert batched == alone
    for (_, max_tokens), (_, finish, tokens) in zip(spec, batched, strict=True):  # each row kept its own budget
        assert tokens == max_tokens if finish == "length" else tokens < max_tokens


def test_an_adapter_folder_is_served_with_its_base_loaded_underneath(chat_model_dir: Path,
                                                                     adapter_dirs: dict[str, Path]) -> None:
    from ayar.errors import UsageError
    from ayar.serve.engine import load_engine

    engine = load_engine(adapter_dirs["tr"])
    assert engine.names == {"tr": "default"} and hasattr(engine.model, "peft_config")
    with pytest.raises(UsageError, match="not a LoRA adapter"):
        load_engine(chat_model_dir, {"x": chat_model_dir})
    with pytest.raises(UsageError, match="used twice"):
        load_engine(chat_model_dir, {"tiny": adapter_dirs["tr"]}, served_name="tiny")
