"""Tool calling, content parts and per-turn learn flags: read, prepared, and masked as the loss sees them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.data.load import check_shape
from ayar.data.prepare import prepare, prepare_files
from ayar.data.templates import record_to_messages, record_tools, set_template
from ayar.data.tokenize import IGNORE_INDEX, check_learned_tokens, tokenize_chat
from ayar.errors import UsageError
from ayar.models.load import load_tokenizer
from ayar.recipe import DataConfig

CITIES = ["Ankara", "İzmir", "Bursa", "Konya", "Adana", "Trabzon"]


def _schema(name: str = "get_weather") -> dict:
    return {"name": name, "description": "Bir şehrin hava durumu",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


def openai_record(city: str) -> dict:
    """A record shaped like OpenAI's chat fine-tuning files with function calling."""
    return {"tools": [{"type": "function", "function": _schema()}],
            "messages": [{"role": "system", "content": "Hava asistanısın."},
                         {"role": "user", "content": f"{city}'da hava nasıl?"},
                         {"role": "assistant", "content": None, "tool_calls": [
                             {"id": "call_1", "type": "function",
                              "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]},
                         {"role": "tool", "tool_call_id": "call_1", "content": f'{{"sicaklik": "{len(city)} derece"}}'},
                         {"role": "assistant", "content": f"{city}'da hava {len(city)} derece."}]}


def sharegpt_record(city: str) -> dict:
    """A record shaped like LLaMA-Factory's glaive_toolcall data (tools as a JSON string)."""
    return {"conversations": [
        {"from": "human", "value": f"{city} için hava durumunu söyler misin?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": city}})},
        {"from": "observation", "value": json.dumps({"durum": f"güneşli-{city.lower()}"})},
        {"from": "gpt", "value": f"{city} bugün güneşli."}],
        "tools": json.dumps([_schema()])}


@pytest.fixture(scope="module")
def tok(tiny_model_dir: Path):
    tokenizer = load_tokenizer(str(tiny_model_dir))
    set_template(tokenizer, "chatml_tools")
    return tokenizer


def _learned_and_masked(tok, encoded: dict) -> tuple[str, str]:
    pairs = list(zip(encoded["input_ids"], encoded["labels"], strict=True))
    learned = tok.decode([t for t, label in pairs if label != IGNORE_INDEX])
    masked = tok.decode([t for t, label in pairs if label == IGNORE_INDEX])
    return learned, masked


def test_openai_tool_record_is_normalised() -> None:
    record = check_shape(openai_record("Ankara"), "messages")
    call = record["messages"][2]
    assert call["content"] == "" and call["tool_calls"] == [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Ankara"}}, "id": "call_1"}]
    assert record["messages"][3] == {"role": "tool", "content": '{"sicaklik": "6 derece"}', "tool_call_id": "call_1"}
    as_object = openai_record("Ankara")
    as_object["messages"][3]["content"] = {"sicaklik": "6 derece"}  # some datasets keep the result as an object
    assert check_shape(as_object, "messages")["messages"][3]["content"] == '{"sicaklik": "6 derece"}'


@pytest.mark.parametrize("make,fmt", [(openai_record, "messages"), (sharegpt_record, "sharegpt")])
def test_tool_outputs_are_masked_and_every_assistant_turn_is_learned(tok, make, fmt: str) -> None:
    record = check_shape(make("Trabzon"), fmt)
    messages = record_to_messages(record)
    assert [m["role"] for m in messages][-4:] == ["user", "assistant", "tool", "assistant"]
    encoded = tokenize_chat(tok, messages, 2048, tools=record_tools(record), with_roles=True)
    learned, masked = _learned_and_masked(tok, encoded)
    # the tool call (name and JSON arguments) and the final answer are learned
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Trabzon"}}\n</tool_call>' in learned
    assert "Trabzon" in learned.split("</tool_call>")[1]  # the answer after the tool output
    # the tool output, the user turn and the tool schemas are context only
    tool_output = messages[-2]["content"]
    assert tool_output not in learned and tool_output in masked
    assert "Bir şehrin hava durumu" in masked and "Bir şehrin hava durumu" not in learned
    roles = {r for r, label in zip(encoded["roles"], encoded["labels"], strict=True) if label != IGNORE_INDEX}
    assert roles == {"assistant"}
    tool_tokens = [label for r, label in zip(encoded["roles"], encoded["labels"], strict=True) if r == "tool"]
    assert tool_tokens and set(tool_tokens) == {IGNORE_INDEX}


def test_template_without_tool_support_is_refused(tiny_model_dir: Path) -> None:
    plain = load_tokenizer(str(tiny_model_dir))
    set_template(plain, "chatml")  # renders role/content only: the tool call would vanish
    record = check_shape(openai_record("Konya"), "messages")
    with pytest.raises(UsageError, match="does not render the tool schema 'get_weather'.*chatml_tools"):
        tokenize_chat(plain, record_to_messages(record), 2048, tools=record_tools(record))


def test_parallel_calls_and_bad_calls(tmp_path: Path) -> None:
    parallel = sharegpt_record("Bursa")
    parallel["conversations"][1]["value"] = json.dumps(
        [{"name": "get_weather", "arguments": {"city": "Bursa"}}, {"name": "get_weather", "arguments": {"city": "Van"}}])
    calls = record_to_messages(check_shape(parallel, "sharegpt"))[1]["tool_calls"]
    assert [c["function"]["arguments"]["city"] for c in calls] == ["Bursa", "Van"]
    rows = [openai_record(c) for c in CITIES[:3]] + [sharegpt_record(c) for c in CITIES[3:]]
    bad_args = openai_record("Van")
    bad_args["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{city: Van"  # line 7
    list_args = openai_record("Muş")
    list_args["messages"][2]["tool_calls"][0]["function"]["arguments"] = "[1, 2]"  # line 8
    bad_sharegpt = sharegpt_record("Rize")
    bad_sharegpt["conversations"][1]["value"] = "get_weather(Rize)"  # line 9
    bad_tools = sharegpt_record("Kars")
    bad_tools["tools"] = json.dumps([{"description": "adsız"}])  # line 10
    image = openai_record("Sinop")
    image["messages"][1]["content"] = [{"type": "text", "text": "Bu ne?"},
                                       {"type": "image_url", "image_url": {"url": "x.png"}}]  # line 11
    path = tmp_path / "tools.jsonl"
    lines = [json.dumps(r, ensure_ascii=False) for r in [*rows, bad_args, list_args, bad_sharegpt, bad_tools, image]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    # sharegpt and messages records live in one file here: read it twice, once per format
    for fmt, kept in (("messages", 3), ("sharegpt", 3)):
        prepared = prepare_files([path], fmt, tmp_path / fmt, dedup={"near": False}, save_arrow=False)
        card = prepared.card
        assert card["kept"] == kept and card["records_in"] == 11 and card["accounting_balanced"]
    reasons = {json.loads(x)["line"]: json.loads(x)["reason"]
               for x in (tmp_path / "messages" / "rejects.jsonl").read_text().splitlines()}
    assert reasons[7].startswith("messages[2].tool_calls[0].arguments is not valid JSON")
    assert reasons[8] == "messages[2].tool_calls[0].arguments must be a JSON object, got list"
    assert reasons[11] == ("messages[1].content[1] is a 'image_url' part: only text parts are read "
                           "(no images or audio yet)")
    reasons = {json.loads(x)["line"]: json.loads(x)["reason"]
               for x in (tmp_path / "sharegpt" / "rejects.jsonl").read_text().splitlines()}
    assert reasons[9].startswith("conversations[1].value is not valid JSON")
    assert reasons[10] == "tools[0] must be a function schema with a 'name'"


def test_content_parts_are_joined() -> None:
    record = check_shape({"messages": [
        {"role": "developer", "content": [{"type": "text", "text": "Kısa "}, {"type": "text", "text": "yanıtla."}]},
        {"role": "user", "content": [{"type": "text", "text": "Merhaba"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Selam."}]}]}, "messages")
    assert [m["content"] for m in record["messages"]] == ["Kısa yanıtla.", "Merhaba", "Selam."]
    assert record["messages"][0]["role"] == "system"


def test_turn_flags_choose_what_is_learned(tok) -> None:
    record = check_shape({"messages": [
        {"role": "user", "content": "ilk soru"}, {"role": "assistant", "content": "eski yanıt", "weight": 0},
        {"role": "user", "content": "ikinci soru"}, {"role": "assistant", "content": "iyi yanıt", "train": True},
        {"role": "user", "content": "üçüncü soru"}, {"role": "assistant", "content": "son yanıt"}]}, "messages")
    learned, masked = _learned_and_masked(tok, tokenize_chat(tok, record_to_messages(record), 2048))
    assert "iyi yanıt" in learned and "son yanıt" in learned and "eski yanıt" not in learned
    assert "eski yanıt" in masked
    sharegpt = check_shape({"conversations": [
        {"from": "human", "value": "soru", "weight": 0}, {"from": "gpt", "value": "taslak", "weight": 0},
        {"from": "human", "value": "tekrar", "weight": 0}, {"from": "gpt", "value": "doğrusu", "weight": 1}]},
        "sharegpt")
    learned, _ = _learned_and_masked(tok, tokenize_chat(tok, record_to_messages(sharegpt), 2048))
    assert "doğrusu" in learned and "taslak" not in learned
    for turn, reason in [({"role": "assistant", "content": "a", "weight": 0.5}, "weight must be true/false or 0/1"),
                         ({"role": "user", "content": "a", "train": True}, "only assistant turns are learned")]:
        with pytest.raises(ValueError, match=reason):
            check_shape({"messages": [turn]}, "messages")


def test_no_learned_token_is_a_usage_error(tmp_path: Path, tiny_model_dir: Path) -> None:
    with pytest.raises(UsageError, match="no assistant token is learned in this split"):
        check_learned_tokens([{"labels": [IGNORE_INDEX] * 4}], "this split", 64)
    path = tmp_path / "silent.jsonl"
    rows = [{"messages": [{"role": "user", "content": f"soru {i}"},
                          {"role": "assistant", "content": f"yanıt {i}", "train": False}]} for i in range(5)]
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    cfg = DataConfig.model_validate({"inputs": [{"path": str(path)}], "format": "messages", "save_arrow": False,
                                     "template": "chatml", "dedup": {"near": False}})
    with pytest.raises(UsageError, match="no assistant token is learned in the training split"):
        prepare(cfg, tmp_path / "out", seed=0, tokenizer=str(tiny_model_dir))


def test_loss_mask_report_counts_learned_tokens_per_role(tmp_path: Path, tiny_model_dir: Path) -> None:
    path = tmp_path / "tools.jsonl"
    path.write_text("\n".join(json.dumps(openai_record(c), ensure_ascii=False) for c in CITIES), encoding="utf-8")
    cfg = DataConfig.model_validate({"inputs": [{"path": str(path)}], "format": "messages", "save_arrow": False,
                                     "template": "chatml_tools", "max_length": 1024, "dedup": {"near": False},
                                     "split": {"train": 1.0, "validation": 0.0, "test": 0.0}})
    prepared = prepare(cfg, tmp_path / "out", seed=0, tokenizer=str(tiny_model_dir))
    mask = prepared.card["loss_mask"]
    assert mask["records_measured"] == len(CITIES) and mask["records_without_learned_tokens"] == 0
    roles = mask["roles"]
    assert roles["assistant"]["learned"] == roles["assistant"]["tokens"] > 0
    for role in ("system", "user", "tool"):
        assert roles[role]["tokens"] > 0 and roles[role]["learned"] == 0
    assert "## Loss mask" in (tmp_path / "out" / "data_card.md").read_text(encoding="utf-8")
    (record,) = prepared.read_split("train")[:1]
    assert record["tools"][0]["function"]["name"] == "get_weather"


def test_training_tokenizes_tool_records_with_their_tools(tok) -> None:
    from ayar.recipe import load_recipe
    from ayar.train.tasks import tokenize_split

    records = [check_shape(openai_record(c), "messages") for c in CITIES[:2]]
    recipe = load_recipe(None, ["model.name_or_path=x", "data.format=messages", "data.max_length=1024",
                                "data.template=chatml_tools"])
    rows = tokenize_split(records, tok, recipe)
    learned, masked = _learned_and_masked(tok, rows[0])
    assert '"name": "get_weather"' in learned and "Bir şehrin hava durumu" in masked
    silent = [{**r, "messages": [{**m, "train": False} if m["role"] == "assistant" else m for m in r["messages"]]}
              for r in records]
    with pytest.raises(UsageError, match="no assistant token is learned"):
        tokenize_split(silent, tok, recipe)


def test_a_template_writing_tool_outputs_through_tojson_passes_the_check(tiny_model_dir: Path) -> None:
    llama_like = load_tokenizer(str(tiny_model_dir))
    set_template(llama_like, "{% for m in messages %}{% if m['role'] == 'tool' %}{{ m['content'] | tojson }}"
                             "{% elif m['tool_calls'] %}{{ m['tool_calls'][0]['function'] | tojson }}"
                             "{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}")
    record = check_shape(openai_record("Rize"), "messages")
    encoded = tokenize_chat(llama_like, record_to_messages(record), 2048)  # no tools given: none to render
    assert any(label != IGNORE_INDEX for label in encoded["labels"])


def test_symbol_filter_judges_tool_calls_by_their_values(tmp_path: Path) -> None:
    """A short call's JSON (braces, quotes, snake_case keys) is mostly symbols: judged as text, every such record
    was removed as symbol_ratio. Calls and tool outputs count by their values; symbol-heavy prose still goes."""
    from ayar.data.load import prose_texts

    def unit_call(value: int, fmt: str) -> dict:
        args = {"value": value, "from_unit": "km", "to_unit": "mi"}
        if fmt == "messages":
            return {"messages": [{"role": "user", "content": f"{value} km?"}, {"role": "assistant", "content": None,
                    "tool_calls": [{"type": "function", "function": {"name": "convert_units",
                                                                     "arguments": json.dumps(args)}}]},
                                 {"role": "tool", "content": json.dumps({"result_mi": value * 0.62})},
                                 {"role": "assistant", "content": f"{value * 0.62} mi."}]}
        return {"conversations": [{"from": "human", "value": f"{value} km?"},
                                  {"from": "function_call", "value": json.dumps({"name": "convert_units",
                                                                                 "arguments": args})},
                                  {"from": "observation", "value": json.dumps({"result_mi": value * 0.62})},
                                  {"from": "gpt", "value": f"{value * 0.62} mi."}]}

    record = check_shape(unit_call(5, "messages"), "messages")
    assert prose_texts(record, "messages") == ["5 km?", "", "5 km mi", "3.1", "3.1 mi."]
    assert prose_texts(check_shape(openai_record("Van"), "messages") | {"messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}, "messages") is None
    for fmt in ("messages", "sharegpt"):
        path = tmp_path / f"{fmt}.jsonl"
        symbols = {"messages": [{"role": "user", "content": "{[(<>)]} !!"}, {"role": "assistant", "content": "?!"}]} \
            if fmt == "messages" else {"conversations": [{"from": "human", "value": "{[(<>)]} !!"},
                                                         {"from": "gpt", "value": "?!"}]}
        rows = [unit_call(v, fmt) for v in (5, 12, 40)] + [symbols]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        card = prepare_files([path], fmt, tmp_path / f"out-{fmt}", dedup={"near": False}, save_arrow=False).card
        assert card["kept"] == 3 and card["removed"] == {"symbol_ratio": 1}, (fmt, card["removed"])
