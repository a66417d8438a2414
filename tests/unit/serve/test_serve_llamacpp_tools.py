"""Tools through the llama.cpp engine: the tiny model trained to call (test_serve_tools), exported to GGUF and
served by llama.cpp, returns the same tool_calls to the official openai client as the transformers engine; each
field the engine cannot carry out is a 400 naming it, the fields it takes are carried out."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel, Field
from test_serve_tools import AFTER, ASK, CLOCK, TOOLS, tool_model_dir  # noqa: F401 - the trained model fixture, reused


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


class Reply(BaseModel):
    answer: str = Field(max_length=10)


NAMED_CALL = {"type": "function", "function": {"name": "get_time"}}
REFUSED = [  # (route, arguments beyond model/messages or prompt, the field the 400 names)
    ("chat", {"logprobs": True}, "logprobs"),
    ("chat", {"logprobs": True, "top_logprobs": 2}, "logprobs"),
    ("completions", {"logprobs": 1}, "logprobs"),
    ("completions", {"logprobs": 0, "echo": True, "max_tokens": 0}, "logprobs"),
    ("chat", {"frequency_penalty": 0.5}, "frequency_penalty"),
    ("chat", {"presence_penalty": -0.5}, "presence_penalty"),
    ("completions", {"logit_bias": {"5": 10}}, "logit_bias"),
    ("completions", {"best_of": 3}, "best_of"),
    ("completions", {"suffix": " end"}, "suffix"),
]


@pytest.mark.parametrize(("route", "extra", "field"), REFUSED, ids=[f"{r}-{f}-{i}" for i, (r, _, f) in
                                                                    enumerate(REFUSED)])
def test_llama_cpp_engine_refuses_each_field_it_cannot_carry_out(llamacpp_client, route: str, extra: dict,
                                                                 field: str) -> None:
    import openai

    with pytest.raises(openai.BadRequestError) as refused:
        if route == "chat":
            llamacpp_client.chat.completions.create(model="tiny", messages=ASK, max_tokens=4, **extra)
        else:
            llamacpp_client.completions.create(model="tiny", prompt="Ankara", max_tokens=extra.pop("max_tokens", 4),
                                               **extra)
    assert refused.value.param == field and refused.value.code == "unsupported_field"
    assert "llamacpp engine" in refused.value.message


def test_llama_cpp_engine_carries_out_the_fields_it_takes(llamacpp_client) -> None:
    """n with a seed, stop, echo, top_k and neutral values of refused fields are answered, not refused."""
    greedy = llamacpp_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0,
                                                     max_tokens=60)
    top_one = llamacpp_client.chat.completions.create(
        model="tiny", messages=ASK, tools=TOOLS, temperature=1.5, seed=5, max_tokens=60, n=2,
        tool_choice="auto", parallel_tool_calls=True, frequency_penalty=0, logit_bias={}, extra_body={"top_k": 1})
    assert [c.message.tool_calls[0].function.arguments for c in top_one.choices] == [
        greedy.choices[0].message.tool_calls[0].function.arguments] * 2  # top_k 1 is the greedy answer
    cut = llamacpp_client.chat.completions.create(model="tiny", messages=AFTER, tools=TOOLS, temperature=0,
                                                  max_tokens=30, stop=[" derece"])
    assert cut.choices[0].message.content == "12"
    echoed = llamacpp_client.completions.create(model="tiny", prompt="Ankara", max_tokens=0, echo=True, best_of=1)
    assert echoed.choices[0].text == "Ankara"


def test_llama_cpp_engine_decodes_under_the_same_grammars(llamacpp_client) -> None:
    """response_format, a forced call and a call the model opens under auto: the transformers engine's
    llguidance grammars, applied to llama.cpp's logits. The model was trained to call get_weather only."""
    parsed = llamacpp_client.chat.completions.parse(model="tiny", messages=ASK, response_format=Reply, temperature=0,
                                                    max_tokens=40).choices[0]
    assert parsed.finish_reason == "stop" and isinstance(parsed.message.parsed, Reply)
    for choice in ({"tool_choice": NAMED_CALL}, {"tool_choice": "auto", "parallel_tool_calls": False}):
        reply = llamacpp_client.chat.completions.create(model="tiny", messages=ASK, tools=[CLOCK], temperature=0,
                                                        max_tokens=100, **choice).choices[0]
        (call,) = reply.message.tool_calls
        arguments = json.loads(call.function.arguments)
        assert call.function.name == "get_time" and arguments["zone"] in ("UTC", "TRT")
        assert isinstance(arguments["hour24"], bool)
    plain = llamacpp_client.chat.completions.create(model="tiny", messages=AFTER, tools=TOOLS, temperature=0,
                                                    max_tokens=30).choices[0]
    assert plain.message.content == "12 derece." and not plain.message.tool_calls  # text stays as it was
