"""Bad input and load get OpenAI error objects: 400, 401, 404, 413, 422, 429, 503, 504; never a crash."""

from __future__ import annotations

import re
import threading
import time

from ayar.serve.app import ServeSettings
from ayar.serve.engine import Job, SamplingParams
from ayar.serve.middleware import OPEN_PATHS, key_matches

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "hello"}]
KEY = "s3cret-key"


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_invalid_json_is_400_and_invalid_fields_are_422(make_client) -> None:
    client = make_client()
    error = _error(client.post(CHAT, content=b'{"model": "tiny", "messages": [', headers={
        "content-type": "application/json"}), 400)
    assert "not valid JSON" in error["message"]
    assert _error(client.post(CHAT, json={"model": "tiny", "messages": HELLO, "temperature": 7}), 422)[
        "param"] == "temperature"
    assert _error(client.post(CHAT, json={"model": "tiny", "messages": HELLO, "n": 17}), 422)["param"] == "n"
    assert _error(client.post(CHAT, json={"model": "tiny", "messages": []}), 422)["param"] == "messages"
    assert _error(client.post(CHAT, json={"model": "tiny"}), 422)["param"] == "messages"
    assert _error(client.post(CHAT, json=[1, 2]), 422)
    assert _error(client.post("/v1/completions", json={"model": "tiny", "prompt": []}), 422)
    assert _error(client.post("/v1/completions", json={"model": "tiny", "prompt": [[1, -2]]}), 422)
    assert _error(client.post(CHAT, json={"model": "tiny", "messages": HELLO, "top_logprobs": 2}), 422)
    assert _error(client.post(CHAT, json={"model": "tiny", "messages": HELLO,
                                          "response_format": {"type": "json_schema"}}), 422)
    lone_surrogate = b'{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}'
    assert _error(client.post(CHAT, content=lone_surrogate, headers={"content-type": "application/json"}), 422)


def test_unknown_model_and_route_are_404(make_client) -> None:
    client = make_client()
    error = _error(client.post(CHAT, json={"model": "gpt-4", "messages": HELLO}), 404)
    assert error["param"] == "model" and "tiny" in error["message"]
    _error(client.get("/v1/models/gpt-4"), 404)
    _error(client.get("/v1/nothing-here"), 404)
    _error(client.get(CHAT), 405)


def test_prompt_over_the_context_window_says_by_how_many_tokens(make_client) -> None:
    client = make_client()
    ctx = client.app.state.engine.context_length
    error = _error(client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": ctx}), 400)
    prompt_tokens = len(client.app.state.engine.encode_text("hi"))
    assert f"{prompt_tokens} tokens over the context window of {ctx}" in error["message"]
    assert error["code"] == "context_length_exceeded"
    long_prompt = " ".join(["word"] * (ctx * 2))
    error = _error(client.post("/v1/completions", json={"model": "tiny", "prompt": long_prompt}), 400)
    assert re.search(r"\d+ over the model's context window", error["message"])


def test_body_over_the_limit_is_413_with_or_without_content_length(make_client) -> None:
    client = make_client(ServeSettings(max_body_bytes=2000))
    big = {"model": "tiny", "messages": [{"role": "user", "content": "x" * 5000}]}
    assert "limit" in _error(client.post(CHAT, json=big), 413)["message"]

    def chunks():  # a generator body is sent chunked, without Content-Length
        yield b'{"model": "tiny", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"y" * 500
        yield b'"}]}'

    assert _error(client.post(CHAT, content=chunks(), headers={"content-type": "application/json"}), 413)


def test_every_route_but_the_probes_needs_the_api_key(make_client) -> None:
    client = make_client(ServeSettings(api_keys=["other-key", KEY]))
    checked = 0
    for route in client.app.routes:
        path = re.sub(r"\{[^}]+\}", "tiny", route.path)
        for method in route.methods - {"HEAD"}:
            anonymous = client.request(method, path)
            wrong = client.request(method, path, headers={"Authorization": "Bearer nope"})
            right = client.request(method, path, headers={"Authorization": f"Bearer {KEY}"})
            if route.path in OPEN_PATHS:
                assert anonymous.status_code == 200
            else:
                assert _error(anonymous, 401)["type"] == "authentication_error", path
                assert wrong.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
                assert right.status_code != 401, path
            checked += 1
    assert checked >= 8  # probes, metrics, models, model, chat, completions, openapi
    assert client.post(CHAT, json={"model": "tiny", "messages": HELLO, "max_tokens": 2},
                       headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_key_comparison() -> None:
    assert key_matches(f"Bearer {KEY}", [KEY]) and key_matches(f"Bearer {KEY}", ["a", KEY])
    for header in (None, "", KEY, f"Basic {KEY}", f"Bearer {KEY}x", "Bearer "):
        assert not key_matches(header, [KEY])


def _block_worker(engine, seconds: float) -> Job:
    """Occupy the worker with a long job that we cancel afterwards."""
    job = Job("tiny", [5], SamplingParams(max_tokens=400, min_tokens=400), time.monotonic() + seconds,
              emit=lambda event: None)
    engine.submit(job)
    deadline = time.monotonic() + 10
    while engine._queue.qsize() and time.monotonic() < deadline:  # wait until the worker took it
        time.sleep(0.01)
    return job


def test_full_queue_is_429_with_retry_after(make_client) -> None:
    client = make_client(max_queue=1)
    engine = client.app.state.engine
    running = _block_worker(engine, 30)
    waiting = Job("tiny", [5], SamplingParams(max_tokens=1), time.monotonic() + 30, emit=lambda event: None)
    engine.submit(waiting)
    try:
        response = client.post(CHAT, json={"model": "tiny", "messages": HELLO, "max_tokens": 2})
        assert _error(response, 429)["code"] == "queue_full"
        assert int(response.headers["retry-after"]) >= 1
        assert "ayar_queue_depth 2.0" in client.get("/metrics").text
    finally:
        running.cancel.set()
        waiting.cancel.set()


def test_request_timeout_is_504(make_client) -> None:
    client = make_client(ServeSettings(request_timeout=0.2))
    body = {"model": "tiny", "prompt": "x", "max_tokens": 400, "min_tokens": 400}
    started = time.monotonic()
    error = _error(client.post("/v1/completions", json=body), 504)
    assert error["code"] == "timeout" and time.monotonic() - started < 10


def test_draining_server_answers_503_but_probes_still_answer(make_client) -> None:
    client = make_client()
    client.app.state.draining = True
    error = _error(client.post(CHAT, json={"model": "tiny", "messages": HELLO}), 503)
    assert error["code"] == "draining"
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503


def test_chat_needs_a_template_and_failed_generation_is_an_error_object(make_client) -> None:
    client = make_client()
    engine = client.app.state.engine
    template, engine.tokenizer.chat_template = engine.tokenizer.chat_template, None
    try:
        assert _error(client.post(CHAT, json={"model": "tiny", "messages": HELLO}), 400)["code"] == "no_chat_template"
    finally:
        engine.tokenizer.chat_template = template
    calls = threading.Event()

    def broken(*args, **kwargs):
        calls.set()
        raise RuntimeError("boom")

    original, engine.model.generate = engine.model.generate, broken
    try:
        assert _error(client.post(CHAT, json={"model": "tiny", "messages": HELLO}), 500)["code"] == "generation_failed"
        assert calls.is_set()
    finally:
        engine.model.generate = original
    assert client.post(CHAT, json={"model": "tiny", "messages": HELLO, "max_tokens": 2}).status_code == 200
