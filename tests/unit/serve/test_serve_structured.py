"""response_format: JSON answers under a grammar (json_object, json_schema), and the 400 of engines that
cannot honour a field."""

from __future__ import annotations

import json
from typing import Literal

from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, Field

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "Describe the weather as JSON."}]


class Weather(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sunny: bool
    sky: Literal["clear", "cloudy", "rain"]
    degrees: int = Field(ge=-40, le=50)  # bounded: a random model would write digits up to max_tokens


SCHEMA_FORMAT = {"type": "json_schema",
                 "json_schema": {"name": "weather", "schema": Weather.model_json_schema(), "strict": True}}


def _chat(client: TestClient, **body: object) -> dict:
    response = client.post(CHAT, json={"model": "tiny", "messages": HELLO, **body})
    assert response.status_code == 200, response.text
    return response.json()


def test_json_schema_answers_parse_and_validate(make_client) -> None:
    client = make_client()
    free = [_chat(client, max_tokens=40, temperature=1.0, seed=s)["choices"][0]["message"]["content"]
            for s in range(3)]
    assert not any(text.startswith('{"sunny"') for text in free)  # the tiny model alone writes no such JSON
    body = _chat(client, max_tokens=60, temperature=1.0, seed=1, n=4, response_format=SCHEMA_FORMAT)
    for choice in body["choices"]:
        assert choice["finish_reason"] == "stop"
        Weather.model_validate_json(choice["message"]["content"])  # raises when the answer strays
    greedy = _chat(client, max_tokens=60, temperature=0, response_format=SCHEMA_FORMAT)
    Weather.model_validate_json(greedy["choices"][0]["message"]["content"])
    assert "\n" not in greedy["choices"][0]["message"]["content"]  # no free whitespace in the grammar


def test_json_object_answers_are_json_objects_where_they_end(make_client) -> None:
    client = make_client()
    answers = [_chat(client, max_tokens=40, temperature=1.0, seed=s, response_format={"type": "json_object"})
               ["choices"][0] for s in range(4)]
    assert all(a["message"]["content"].startswith("{") for a in answers)
    ended = [a for a in answers if a["finish_reason"] == "stop"]
    assert ended, "no answer closed its object within 40 tokens"
    assert all(isinstance(json.loads(a["message"]["content"]), dict) for a in ended)


def test_a_schema_that_cannot_compile_is_a_400(make_client) -> None:
    client = make_client()
    bad = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "no-such-type"}}}
    response = client.post(CHAT, json={"model": "tiny", "messages": HELLO, "response_format": bad})
    assert response.status_code == 400 and response.json()["error"]["param"] == "response_format"
    text = _chat(client, max_tokens=3, min_tokens=3, response_format={"type": "text"})
    assert text["usage"]["completion_tokens"] == 3


def test_an_engine_without_a_field_answers_400_naming_it(make_client) -> None:
    from ayar.serve.llamacpp_engine import LlamaCppEngine
    from ayar.serve.vllm_engine import VllmEngine

    assert VllmEngine.honours == frozenset() and "logprobs" not in LlamaCppEngine.honours
    client = make_client()
    engine = client.app.state.engine
    engine.kind, engine.honours = "vllm", VllmEngine.honours  # as the vLLM engine declares itself
    asks = [(CHAT, {"messages": HELLO, "logprobs": True}, "logprobs"),
            (CHAT, {"messages": HELLO, "response_format": {"type": "json_object"}}, "response_format"),
            ("/v1/completions", {"prompt": "x", "echo": True, "max_tokens": 0, "logprobs": 1}, "logprobs")]
    for route, body, field in asks:
        response = client.post(route, json={"model": "tiny", **body})
        error = response.json()["error"]
        assert response.status_code == 400 and error["param"] == field and "vllm" in error["message"]
    echoed = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "echo": True, "max_tokens": 0})
    assert echoed.json()["choices"][0]["text"] == "x"  # echo alone needs nothing of the engine
    assert _chat(client, max_tokens=2, n=2)["usage"]["completion_tokens"] >= 2


def test_json_object_string_values_are_capped(make_client) -> None:
    """A small model cannot write one string until max_tokens cuts its object off."""
    import llguidance

    from ayar.serve.constrained import MAX_FREE_STRING, json_object_schema

    grammar = make_client().app.state.engine.compile_constraint(json_object_schema())
    for length, fits in ((MAX_FREE_STRING, True), (MAX_FREE_STRING + 1, False)):
        ids = grammar.vocabulary.tokenize_str('{"a": "' + "x" * length + '"}')
        matcher = llguidance.LLMatcher(grammar.vocabulary, grammar.grammar, log_level=0)
        assert (matcher.validate_tokens(ids) == len(ids)) is fits


class City(BaseModel):
    name: str = Field(max_length=20)
    weather: Weather


class Forecast(BaseModel):
    cities: list[City] = Field(min_length=1, max_length=2)


def test_the_openai_client_parse_gets_a_valid_pydantic_object_in_turkish_and_english(make_client) -> None:
    """chat.completions.parse sends the model's schema as json_schema and validates the answer into it: the
    tiny model's answers are objects only because the grammar keeps them so."""
    from openai import OpenAI

    client = OpenAI(base_url="http://testserver/v1", api_key="x", http_client=make_client(), max_retries=0)
    for prompt in ("Yarın Ankara ve İzmir'de hava nasıl olacak?", "What is tomorrow's weather in Ankara?"):
        reply = client.chat.completions.parse(model="tiny", messages=[{"role": "user", "content": prompt}],
                                              response_format=Forecast, max_tokens=300, temperature=1.0, seed=2, n=2)
        for choice in reply.choices:
            assert choice.finish_reason == "stop", choice.message.content
            assert isinstance(choice.message.parsed, Forecast) and choice.message.parsed.cities
