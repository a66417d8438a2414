"""`ayar serve --engine llamacpp` as a real process: a run's exported GGUF answers the official openai client
as llama.cpp itself answers it, ends at the chat template's end of turn, and keeps ayar's auth and metrics."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_serve_http import API_KEY, start_server, stop_server  # the same process harness (serves 'tiny')

MESSAGES = [{"role": "user", "content": "merhaba"}]  # the chatml fixture answers it in 2 tokens, then <|im_end|>


@pytest.fixture(scope="module")
def gguf_run(chatml_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder as `ayar run` leaves it with a GGUF export: <run>/model and <run>/export/gguf/<run>.gguf."""
    from ayar.export import export_model

    run = tmp_path_factory.mktemp("runs") / "chat"
    shutil.copytree(chatml_model_dir, run / "model")
    export_model(run / "model", run / "export" / "gguf", fmt="gguf", gguf_dtype="f32")
    return run


@pytest.fixture(scope="module")
def server(gguf_run: Path) -> Iterator[str]:
    proc, base = start_server(gguf_run, "--engine", "llamacpp", "--threads", "1")
    yield base
    stop_server(proc)


@pytest.fixture(scope="module")
def llama(gguf_run: Path):
    """llama.cpp itself on the same file, with its own tokenizer and the chat template stored in the file."""
    from llama_cpp import Llama

    return Llama(str(next((gguf_run / "export" / "gguf").glob("*.gguf"))), n_ctx=0, n_threads=1, verbose=False)


def _client(base: str, key: str = API_KEY):
    from openai import OpenAI

    return OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)


def test_greedy_chat_equals_llama_cpp_and_stops_at_end_of_turn(server: str, llama) -> None:
    chat = _client(server).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    own = llama.create_chat_completion(messages=MESSAGES, max_tokens=12, temperature=0)
    assert chat.choices[0].message.content == own["choices"][0]["message"]["content"]
    assert chat.choices[0].finish_reason == own["choices"][0]["finish_reason"] == "stop"  # <|im_end|>, not 12
    assert chat.usage.prompt_tokens == own["usage"]["prompt_tokens"]  # the same prompt, token for token
    # two answer tokens and <|im_end|>: ayar counts the token that ended the answer (as its transformers engine
    # and vLLM do), llama.cpp does not
    assert chat.usage.completion_tokens == own["usage"]["completion_tokens"] + 1 == 3


def test_greedy_completion_equals_llama_cpp_token_for_token(server: str, llama) -> None:
    # a prompt this tiny model does not end early on: ten tokens to compare, each the greedy one
    text = _client(server).completions.create(model="tiny", prompt="import os", max_tokens=10, temperature=0)
    own = llama.create_completion("import os", max_tokens=10, temperature=0)
    assert text.choices[0].text == own["choices"][0]["text"] and text.choices[0].text
    assert text.usage.completion_tokens == own["usage"]["completion_tokens"] == 10
    assert text.choices[0].finish_reason == own["choices"][0]["finish_reason"] == "length"


def test_streaming_equals_the_whole_answer_and_ends_at_end_of_turn(server: str) -> None:
    client = _client(server)
    whole = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    stream = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    parts, finishes, usage = [], [], None
    for chunk in stream:
        if chunk.choices:
            parts.append(chunk.choices[0].delta.content or "")
            finishes.append(chunk.choices[0].finish_reason)
        usage = chunk.usage or usage
    assert "".join(parts) == whole.choices[0].message.content
    assert finishes[-1] == "stop" and usage.completion_tokens == whole.usage.completion_tokens


def test_sampling_settings_reach_llama_cpp(server: str) -> None:
    client = _client(server)
    greedy = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0)
    # no temperature: the run's generation_config.json (temperature 0.7 with top_k 1: greedy after all)
    default = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12)
    assert default.choices[0].message.content == greedy.choices[0].message.content
    short = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=1, temperature=0)
    assert short.choices[0].finish_reason == "length" and short.usage.completion_tokens == 1
    longer = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=0,
                                            extra_body={"min_tokens": 6})
    assert longer.usage.completion_tokens >= 6  # the end of turn held back until 6 tokens
    # top_k 1 (generation_config.json) makes even a hot, seeded sample the greedy answer
    hot = client.chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=12, temperature=1.5, seed=7)
    assert hot.choices[0].message.content == greedy.choices[0].message.content


def test_auth_and_metrics_apply_to_the_llama_cpp_engine(server: str) -> None:
    from openai import AuthenticationError

    with pytest.raises(AuthenticationError):
        _client(server, "wrong").chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=2)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert httpx.get(f"{server}/metrics").status_code == 401
    _client(server).chat.completions.create(model="tiny", messages=MESSAGES, max_tokens=4, temperature=0)
    text = httpx.get(f"{server}/metrics", headers=auth).text
    generated = [line for line in text.splitlines() if line.startswith('ayar_generated_tokens_total{model="tiny"}')]
    assert generated and float(generated[0].rsplit(" ", 1)[1]) >= 3
    assert 'ayar_requests_total{route="/v1/chat/completions",status="200"}' in text
    assert 'ayar_prompt_tokens_total{model="tiny"}' in text


def test_a_bare_gguf_file_brings_its_own_tokenizer_and_template(gguf_run: Path) -> None:
    from ayar.models.load import load_tokenizer
    from ayar.serve.llamacpp_engine import load_llamacpp_engine

    gguf = next((gguf_run / "export" / "gguf").glob("*.gguf"))
    engine = load_llamacpp_engine(gguf, threads=1)
    run_tokenizer = load_tokenizer(str(gguf_run / "model"))
    assert list(engine.names) == ["chat"]  # the file's name
    conversation = [{"role": "system", "content": "Kısa cevap ver."}, *MESSAGES]
    expected = run_tokenizer(run_tokenizer.apply_chat_template(conversation, tokenize=False,
                                                               add_generation_prompt=True),
                             add_special_tokens=False)["input_ids"]
    assert engine.encode_chat(conversation) == expected
    assert run_tokenizer.convert_tokens_to_ids("<|im_end|>") in engine.stop_ids
