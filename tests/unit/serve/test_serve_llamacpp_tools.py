"""Tools through the llama.cpp engine: the tiny model trained to call (test_serve_tools), exported to GGUF and
served by llama.cpp, returns the same tool_calls to the official openai client as the transformers engine."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from test_serve_tools import ASK, TOOLS, tool_model_dir  # noqa: F401 - the trained model fixture, reused


@pytest.fixture(scope="module")
def llamacpp_client(tool_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator:  # noqa: F811
    from openai import OpenAI

    from ayar.export import export_model
    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.llamacpp_engine import LlamaCppEngine, load_llamacpp_engine

    run = tmp_path_factory.mktemp("runs") / "tools"
    shutil.copytree(tool_model_dir, run / "model")
    export_model(run / "model", run / "export" / "gguf", fmt="gguf", gguf_dtype="f32")
    engine = load_llamacpp_engine(run, "tiny", 8, threads=1).start()
    assert isinstance(engine, LlamaCppEngine)
    with TestClient(create_app(ServeSettings(), engine=engine)) as http:
        yield OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


def test_llama_cpp_engine_returns_tool_calls_and_takes_tool_outputs(llamacpp_client) -> None:
    reply = llamacpp_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0,
                                                    max_tokens=60)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Ankara"}
    history = [*ASK, choice.message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": '{"derece": 12}'}]
    second = llamacpp_client.chat.completions.create(model="tiny", messages=history, tools=TOOLS, temperature=0,
                                                     max_tokens=30)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content == "12 derece."
    stream = llamacpp_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0,
                                                     max_tokens=60, stream=True)
    calls = [c for chunk in stream if chunk.choices for c in chunk.choices[0].delta.tool_calls or []]
    assert [c.function.name for c in calls] == ["get_weather"]
