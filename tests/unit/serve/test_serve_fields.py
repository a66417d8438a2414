"""Optional request fields on the transformers engine: vLLM's top_k and repetition_penalty are carried out,
OpenAI fields no engine carries out are a 400 naming them, and their neutral values ask nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

CHAT = "/v1/chat/completions"
ASK = [{"role": "user", "content": "Ankara'da hava nasıl?"}]


def _text(client: TestClient, model: str = "tr", **body: object) -> str:
    response = client.post(CHAT, json={"model": model, "messages": ASK, "max_tokens": 12, **body})
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"]


def test_top_k_one_samples_the_greedy_answer(make_client, adapter_dirs: dict[str, Path]) -> None:
    client = make_client(adapters=adapter_dirs)
    greedy = _text(client, temperature=0)
    hot = [_text(client, temperature=1.5, seed=seed) for seed in range(4)]
    assert any(text != greedy for text in hot)  # without the cut, sampling strays from the greedy answer
    assert [_text(client, temperature=1.5, seed=seed, top_k=1) for seed in range(4)] == [greedy] * 4
    assert _text(client, temperature=1.5, seed=0, top_k=-1) == hot[0]  # vLLM's -1: no cut


def test_repetition_penalty_changes_a_repeating_answer(make_client) -> None:
    client = make_client()
    plain = _text(client, "tiny", temperature=0)
    assert plain == "\n" * len(plain)  # the random base model repeats one token
    assert _text(client, "tiny", temperature=0, repetition_penalty=1.0) == plain
    assert _text(client, "tiny", temperature=0, repetition_penalty=50.0) != plain


@pytest.mark.parametrize(("route", "extra", "field"), [
    (CHAT, {"frequency_penalty": 0.5}, "frequency_penalty"),
    (CHAT, {"presence_penalty": 1.0}, "presence_penalty"),
    (CHAT, {"logit_bias": {"5": -100}}, "logit_bias"),
    ("/v1/completions", {"best_of": 2}, "best_of"),
    ("/v1/completions", {"suffix": "x"}, "suffix"),
])
def test_fields_no_engine_carries_out_are_a_400_naming_them(make_client, route: str, extra: dict,
                                                            field: str) -> None:
    prompt = {"messages": ASK} if route == CHAT else {"prompt": "Ankara"}
    response = make_client().post(route, json={"model": "tiny", "max_tokens": 2, **prompt, **extra})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == field and error["code"] == "unsupported_field"
    assert "no ayar engine carries it out" in error["message"]


def test_neutral_values_of_those_fields_ask_nothing(make_client) -> None:
    client = make_client()
    neutral = {"frequency_penalty": 0, "presence_penalty": 0, "logit_bias": {}, "parallel_tool_calls": True,
               "tool_choice": "auto", "response_format": {"type": "text"}, "logprobs": False}
    assert client.post(CHAT, json={"model": "tiny", "messages": ASK, "max_tokens": 2, **neutral}).status_code == 200
    completion = client.post("/v1/completions", json={"model": "tiny", "prompt": "Ankara", "max_tokens": 2, "n": 2,
                                                      "best_of": 2, "suffix": ""})
    assert completion.status_code == 200 and len(completion.json()["choices"]) == 2
