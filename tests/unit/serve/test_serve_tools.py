"""OpenAI tools/tool_calls through `ayar serve` with the official openai client, on a tiny model trained to call."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Bir şehrin hava durumu",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
ASK = [{"role": "user", "content": "Ankara'da hava nasıl?"}]
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Ankara"}}}]}
AFTER = [*ASK, CALL, {"role": "tool", "content": '{"derece": 12}'}]
ANSWER = {"role": "assistant", "content": "12 derece."}


@pytest.fixture(scope="module")
def tool_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer model with the chatml_tools template, trained until it answers the question with a call
    and the tool output with a sentence (so the test sees what the model really generates)."""
    import torch

    from ayar.data.templates import set_template
    from ayar.data.tokenize import tokenize_chat
    from ayar.models.load import load_tokenizer
    from ayar.models.scratch import build_model
    from ayar.recipe import ScratchModelConfig

    out = tmp_path_factory.mktemp("tool_model")
    tok = load_tokenizer(str(tiny_model_dir))
    set_template(tok, "chatml_tools")
    model = build_model(ScratchModelConfig(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128,
                                           context_length=512), tok, seed=0)
    rows = [tokenize_chat(tok, [*ASK, CALL], 512, tools=TOOLS), tokenize_chat(tok, [*AFTER, ANSWER], 512, tools=TOOLS)]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(120):
        for row in rows:
            ids = torch.tensor([row["input_ids"]])
            loss = model(input_ids=ids, labels=torch.tensor([row["labels"]])).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    assert loss.item() < 0.05
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _client(model_dir: Path, **settings: bool) -> Iterator:
    from openai import OpenAI

    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.engine import load_engine

    engine = load_engine(model_dir, None, "tiny", 8).start()
    with TestClient(create_app(ServeSettings(**settings), engine=engine)) as http:
        yield OpenAI(base_url="http://testserver/v1", api_key="x", http_client=http, max_retries=0)


@pytest.fixture(scope="module")
def openai_client(tool_model_dir: Path) -> Iterator:
    yield from _client(tool_model_dir)


@pytest.fixture(scope="module")
def free_client(tool_model_dir: Path) -> Iterator:
    """The same server with a call the model chooses to make left unconstrained (serve.tool_call_grammar off)."""
    yield from _client(tool_model_dir, tool_call_grammar=False)


def test_a_call_comes_back_as_tool_calls(openai_client) -> None:
    reply = openai_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0,
                                                  max_tokens=60)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Ankara"}
    assert not choice.message.content


def test_tool_outputs_round_trip_and_streaming(openai_client) -> None:
    first = openai_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0,
                                                  max_tokens=60).choices[0].message
    # the client's own message object goes back in, then the tool's output, as OpenAI's docs show
    history = [*ASK, first.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": first.tool_calls[0].id, "content": '{"derece": 12}'}]
    second = openai_client.chat.completions.create(model="tiny", messages=history, tools=TOOLS, temperature=0,
                                                   max_tokens=30)
    assert second.choices[0].finish_reason == "stop" and second.choices[0].message.content == "12 derece."
    assert not second.choices[0].message.tool_calls
    stream = openai_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, temperature=0,
                                                   max_tokens=60, stream=True)
    calls, finishes = [], []
    for chunk in stream:
        if chunk.choices:
            calls += chunk.choices[0].delta.tool_calls or []
            finishes.append(chunk.choices[0].finish_reason)
    assert [c.function.name for c in calls] == ["get_weather"] and finishes[-1] == "tool_calls"
    assert json.loads(calls[0].function.arguments) == {"city": "Ankara"}


def test_tool_choice_none_and_bad_requests(openai_client) -> None:
    import openai

    plain = openai_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="none",
                                                  temperature=0, max_tokens=20)
    assert not plain.choices[0].message.tool_calls  # no tools rendered, nothing parsed
    bad = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "get_weather", "arguments": "{city"}}]}]
    with pytest.raises(openai.BadRequestError, match="arguments is not valid JSON"):
        openai_client.chat.completions.create(model="tiny", messages=bad, tools=TOOLS, max_tokens=4)


def test_a_template_without_tool_support_is_a_400(make_client) -> None:
    client = make_client()  # the alpaca template: no tools
    response = client.post("/v1/chat/completions", json={"model": "tiny", "messages": ASK, "tools": TOOLS})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "template_without_tools" and "chatml_tools" in error["message"]


def test_parse_tool_calls_formats() -> None:
    from ayar.data.templates import parse_tool_calls

    assert parse_tool_calls('Bakıyorum.\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}\n</tool_call>') == (
        "Bakıyorum.", [{"type": "function", "function": {"name": "f", "arguments": {"a": 1}}}])
    assert parse_tool_calls('{"name": "get_weather", "parameters": {"city": "Van"}}', TOOLS)[1][0]["function"] == {
        "name": "get_weather", "arguments": {"city": "Van"}}
    assert parse_tool_calls('{"name": "other", "arguments": {}}', TOOLS) == ('{"name": "other", "arguments": {}}', [])
    assert parse_tool_calls("<tool_call>not json</tool_call>") == ("<tool_call>not json</tool_call>", [])


CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["UTC", "TRT"]}, "hour24": {"type": "boolean"}},
    "required": ["zone", "hour24"], "additionalProperties": False}}}


def test_a_named_function_is_called_with_arguments_in_its_schema(openai_client, free_client) -> None:
    """The model, trained to call get_weather, is offered get_time only: free, it does not call get_time
    properly; named, the grammar picks the name and keeps the arguments to get_time's schema."""
    free = free_client.chat.completions.create(model="tiny", messages=ASK, tools=[CLOCK], temperature=0,
                                               max_tokens=60)
    assert not any(c.function.name == "get_time" for c in free.choices[0].message.tool_calls or [])
    named = {"type": "function", "function": {"name": "get_time"}}
    for seed in range(3):
        reply = openai_client.chat.completions.create(model="tiny", messages=ASK, tools=[CLOCK], tool_choice=named,
                                                      parallel_tool_calls=False, temperature=1.0, seed=seed,
                                                      max_tokens=100)
        choice = reply.choices[0]
        assert choice.finish_reason == "tool_calls"
        (call,) = choice.message.tool_calls
        arguments = json.loads(call.function.arguments)
        assert call.function.name == "get_time" and set(arguments) == {"zone", "hour24"}
        assert arguments["zone"] in ("UTC", "TRT") and isinstance(arguments["hour24"], bool)


def test_required_makes_a_valid_call_where_the_model_writes_a_broken_one(openai_client, free_client) -> None:
    hello = [{"role": "user", "content": "Merhaba!"}]
    free = free_client.chat.completions.create(model="tiny", messages=hello, tools=[CLOCK], temperature=0,
                                               max_tokens=60)
    assert not free.choices[0].message.tool_calls  # it starts a call it cannot finish
    forced = openai_client.chat.completions.create(model="tiny", messages=hello, tools=[CLOCK],
                                                   tool_choice="required", temperature=0, max_tokens=100)
    choice = forced.choices[0]
    assert choice.finish_reason == "tool_calls" and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0].function
    assert call.name == "get_time" and json.loads(call.arguments)["zone"] in ("UTC", "TRT")


def test_a_call_the_model_opens_under_auto_is_held_to_the_offered_functions(openai_client, free_client) -> None:
    """tool_choice auto: the model, trained to call get_weather, is offered get_time only. Unconstrained, the
    call it opens is not a valid get_time call; held (the default), the same greedy answer becomes one, with
    arguments in get_time's schema. An answer in text is left as it is."""
    for client, held in ((free_client, False), (openai_client, True)):
        reply = client.chat.completions.create(model="tiny", messages=ASK, tools=[CLOCK], tool_choice="auto",
                                               temperature=0, max_tokens=100).choices[0]
        calls = [c.function for c in reply.message.tool_calls or [] if c.function.name == "get_time"]
        assert bool(calls) == held
    (call,) = calls
    assert reply.finish_reason == "tool_calls" and json.loads(call.arguments)["zone"] in ("UTC", "TRT")
    one = openai_client.chat.completions.create(model="tiny", messages=ASK, tools=[CLOCK], temperature=0,
                                                parallel_tool_calls=False, max_tokens=100).choices[0]
    assert [c.function.name for c in one.message.tool_calls] == ["get_time"]
    answers = [client.chat.completions.create(model="tiny", messages=AFTER, tools=TOOLS, temperature=0,
                                              max_tokens=30).choices[0].message
               for client in (free_client, openai_client)]
    assert [a.content for a in answers] == ["12 derece."] * 2 and not any(a.tool_calls for a in answers)


def _writable(model_dir: Path, lark: str) -> Callable[[str], bool]:
    """Whether the grammar lets a model write a whole answer, the end of turn included."""
    import llguidance
    import llguidance.hf

    from ayar.models.load import load_tokenizer

    tokenizer = load_tokenizer(str(model_dir))
    vocabulary = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer), eos_token=[tokenizer.eos_token_id])
    grammar = llguidance.LLMatcher.grammar_from_lark(lark)

    def writable(answer: str) -> bool:
        ids = [*vocabulary.tokenize_str(answer), tokenizer.eos_token_id]
        return llguidance.LLMatcher(vocabulary, grammar, log_level=0).validate_tokens(ids) == len(ids)

    return writable


def _tagged(name: str, arguments: str) -> str:
    return f'<tool_call>\n{{"name": "{name}", "arguments": {arguments}}}\n</tool_call>'


def test_a_chosen_call_grammar_keeps_text_free_and_calls_to_their_schema(tool_model_dir: Path) -> None:
    from ayar.serve.constrained import chosen_call_grammar

    weather, clock = _tagged("get_weather", '{"city": "Izmir"}'), _tagged("get_time", '{"zone": "UTC", "hour24": true}')
    several = _writable(tool_model_dir, chosen_call_grammar([*TOOLS, CLOCK], tagged=True, parallel=True))
    assert several("Bilmiyorum.") and several("") and several(f"Bakayım. {weather}") and several(f"{weather}\n{clock}")
    assert not several(_tagged("weather", '{"city": "Izmir"}'))  # a function never offered
    assert not several(_tagged("get_weather", '{"city": "Izmir", "unit": "city", "required": "city"}'))
    assert not several(_tagged("get_time", '{"zone": "CET", "hour24": true}'))
    one = _writable(tool_model_dir, chosen_call_grammar([*TOOLS, CLOCK], tagged=True, parallel=False))
    assert one(weather) and one("Bilmiyorum.") and not one(f"{weather}\n{clock}") and not one(f"{weather} tamam")


def test_a_chosen_call_grammar_beside_a_response_format_or_for_bare_calls(tool_model_dir: Path) -> None:
    from ayar.serve.constrained import chosen_call_grammar

    answer = {"type": "object", "properties": {"derece": {"type": "integer"}}, "required": ["derece"],
              "additionalProperties": False}
    json_or_call = _writable(tool_model_dir, chosen_call_grammar(TOOLS, tagged=True, parallel=True,
                                                                 answer_schema=answer))
    assert json_or_call('{"derece": 12}') and json_or_call(_tagged("get_weather", '{"city": "Izmir"}'))
    assert not json_or_call("12 derece.") and not json_or_call('{"derece": "on iki"}')
    bare = _writable(tool_model_dir, chosen_call_grammar(TOOLS, tagged=False, parallel=False))
    assert bare("12 derece.") and bare('{"name": "get_weather", "arguments": {"city": "Izmir"}}')
    assert not bare('{"name": "weather", "arguments": {}}')


def test_a_forced_call_caps_free_strings_and_takes_no_invented_keys(tool_model_dir: Path) -> None:
    """Arguments outside get_weather's schema, such as {"city": "Izmir", "unit": "city"}, cannot be written
    under the grammar, nor a city longer than the cap."""
    import llguidance
    import llguidance.hf

    from ayar.models.load import load_tokenizer
    from ayar.serve.constrained import MAX_FREE_STRING, call_grammar, call_schema

    schema = call_schema(TOOLS)["properties"]["arguments"]
    assert schema["properties"]["city"] == {"type": "string", "maxLength": MAX_FREE_STRING}
    assert TOOLS[0]["function"]["parameters"]["properties"]["city"] == {"type": "string"}  # the request's own
    tokenizer = load_tokenizer(str(tool_model_dir))
    vocabulary = llguidance.hf.from_tokenizer(tokenizer, n_vocab=len(tokenizer), eos_token=[tokenizer.eos_token_id])
    grammar = llguidance.LLMatcher.grammar_from_lark(call_grammar(TOOLS, tagged=True))

    def writable(arguments: str) -> bool:
        ids = vocabulary.tokenize_str(f'<tool_call>\n{{"name": "get_weather", "arguments": {arguments}}}\n</tool_call>')
        return llguidance.LLMatcher(vocabulary, grammar, log_level=0).validate_tokens(ids) == len(ids)

    assert writable('{"city": "Izmir"}') and writable('{"city": "' + "x" * MAX_FREE_STRING + '"}')
    assert not writable('{"city": "Izmir", "unit": "city"}')
    assert not writable('{"city": "' + "x" * (MAX_FREE_STRING + 1) + '"}')


def test_a_forced_call_without_its_tool_or_with_a_response_format_is_refused(openai_client) -> None:
    import openai

    with pytest.raises(openai.UnprocessableEntityError, match="not one of the tools"):
        openai_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, max_tokens=4,
                                              tool_choice={"type": "function", "function": {"name": "get_time"}})
    with pytest.raises(openai.UnprocessableEntityError, match="needs tools"):
        openai_client.chat.completions.create(model="tiny", messages=ASK, tool_choice="required", max_tokens=4)
    with pytest.raises(openai.BadRequestError) as both:
        openai_client.chat.completions.create(model="tiny", messages=ASK, tools=TOOLS, tool_choice="required",
                                              response_format={"type": "json_object"}, max_tokens=4)
    assert both.value.param == "tool_choice"
