"""A seeded generator of tool-calling conversations in the OpenAI shape, Turkish and English.

Each record offers a few function schemas (``tools``), asks something in Turkish or English and answers
with a call whose arguments can be read off the request (the city, the amount and currencies, the time
and the task...), or, for requests no tool serves, with a plain answer. A share of the calls goes on
with the tool's result and a final answer that quotes it. No offline dataset has such conversations in
Turkish with arguments that can be checked exactly, so the project writes its own; the tasks plug into
``data.synthetic.tasks`` as the instruction tasks of ``ayar.data.synthetic`` do.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any

from ayar.data.synthetic import distinct_draws
from ayar.errors import UsageError
from ayar.recipe import DataConfig

CITIES = ["İstanbul", "Ankara", "İzmir", "Bursa", "Antalya", "Trabzon", "Konya", "Eskişehir", "Gaziantep",
          "Diyarbakır", "Samsun", "Kayseri", "Mardin", "Paris", "London", "Berlin", "Tokyo", "New York", "Madrid",
          "Rome", "Cairo", "Moscow", "Sydney", "Toronto", "Dubai", "Athens", "Vienna", "Amsterdam", "Seoul",
          "Lisbon", "Prague", "Oslo", "Baku", "Tbilisi", "Sofia", "Helsinki"]
CURRENCIES = {"USD": 1.0, "EUR": 0.92, "TRY": 34.5, "GBP": 0.79, "JPY": 151.0, "CHF": 0.88}  # per US dollar
UNITS = {("km", "mi"): 0.621371, ("mi", "km"): 1.609344, ("kg", "lb"): 2.204623, ("lb", "kg"): 0.453592,
         ("m", "ft"): 3.28084, ("ft", "m"): 0.3048, ("cm", "in"): 0.393701, ("in", "cm"): 2.54,
         ("l", "gal"): 0.264172, ("gal", "l"): 3.785412}
REMINDERS = [("call mom", "annemi ara"), ("buy bread", "ekmek al"), ("water the plants", "çiçekleri sula"),
             ("pay the rent", "kirayı öde"), ("take my medicine", "ilacımı al"), ("send the report", "raporu gönder"),
             ("book a table", "masa ayırt"), ("walk the dog", "köpeği gezdir"), ("check the oven", "fırına bak"),
             ("join the meeting", "toplantıya katıl"), ("feed the cat", "kediyi besle"),
             ("renew my passport", "pasaportumu yenile")]
CONDITIONS = [("sunny", "güneşli"), ("cloudy", "bulutlu"), ("rainy", "yağmurlu"), ("snowy", "karlı"),
              ("windy", "rüzgârlı")]

TOOL_SCHEMAS: dict[str, dict[str, Any]] = {
    "get_weather": {"description": "Current weather in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"},
                                         "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}},
    "convert_currency": {"description": "Convert an amount of money", "parameters": {
        "type": "object", "properties": {"amount": {"type": "number"}, "from_currency": {"type": "string"},
                                         "to_currency": {"type": "string"}},
        "required": ["amount", "from_currency", "to_currency"]}},
    "get_local_time": {"description": "Current local time in a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
    "create_reminder": {"description": "Set a reminder", "parameters": {
        "type": "object", "properties": {"text": {"type": "string"}, "time": {"type": "string"}},
        "required": ["text", "time"]}},
    "convert_units": {"description": "Convert a length, weight or volume", "parameters": {
        "type": "object", "properties": {"value": {"type": "number"}, "from_unit": {"type": "string"},
                                         "to_unit": {"type": "string"}},
        "required": ["value", "from_unit", "to_unit"]}},
}
NO_TOOL = "no_tool"  # requests no offered tool serves: the answer is plain text, and calling a tool is wrong

Draw = tuple[str, dict[str, Any], dict[str, Any], str]  # (request, arguments, tool result, final answer)


def _number(rng: random.Random) -> int | float:
    """An amount as people type it: mostly whole numbers, sometimes with a half."""
    whole = rng.choice([rng.randint(1, 20), rng.randint(20, 500), rng.randint(500, 5000)])
    return whole + 0.5 if rng.random() < 0.2 else whole


def _show(number: float) -> str:
    """A number as the request and the answer write it: 12, 12.5, 1234.56 (never 1.23e+06)."""
    return str(int(number)) if float(number).is_integer() else f"{number:.2f}".rstrip("0")


def _weather(rng: random.Random, lang: str) -> Draw:
    city = rng.choice(CITIES)
    fahrenheit = rng.random() < 0.3
    args: dict[str, Any] = {"city": city, **({"unit": "fahrenheit"} if fahrenheit else {})}
    degrees = rng.randint(-5, 35)
    shown = round(degrees * 9 / 5 + 32) if fahrenheit else degrees
    unit = "°F" if fahrenheit else "°C"
    en, tr = rng.choice(CONDITIONS)
    result = {"city": city, "temperature": shown, "unit": "fahrenheit" if fahrenheit else "celsius", "condition": en}
    if lang == "tr":
        ask = rng.choice([f"{city} için hava durumu nedir?", f"{city} için bugünkü hava nasıl?",
                          f"Hava durumu: {city}"])
        if fahrenheit:
            ask = rng.choice([f"{city} için hava durumunu Fahrenheit olarak söyler misin?",
                              f"Fahrenheit cinsinden {city} hava durumu nedir?"])
        return ask, args, result, f"{city}: {shown} {unit}, {tr}."
    ask = rng.choice([f"What's the weather in {city}?", f"How is the weather in {city} today?",
                      f"Weather for {city}, please."])
    if fahrenheit:
        ask = rng.choice([f"What's the weather in {city} in Fahrenheit?", f"Weather in {city}, in Fahrenheit?"])
    return ask, args, result, f"It is {shown} {unit} and {en} in {city}."


def _currency(rng: random.Random, lang: str) -> Draw:
    source, target = rng.sample(sorted(CURRENCIES), 2)
    amount = _number(rng)
    value = round(amount * CURRENCIES[target] / CURRENCIES[source], 2)
    args = {"amount": amount, "from_currency": source, "to_currency": target}
    result = {**args, "result": value}
    if lang == "tr":
        ask = rng.choice([f"{_show(amount)} {source} kaç {target} eder?",
                          f"{_show(amount)} {source} tutarını {target} cinsine çevir.",
                          f"{source} → {target}: {_show(amount)}"])
    else:
        ask = rng.choice([f"Convert {_show(amount)} {source} to {target}.",
                          f"How much is {_show(amount)} {source} in {target}?",
                          f"{_show(amount)} {source} to {target}?"])
    return ask, args, result, f"{_show(amount)} {source} = {_show(value)} {target}."


def _time(rng: random.Random, lang: str) -> Draw:
    city = rng.choice(CITIES)
    now = f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
    result = {"city": city, "time": now}
    if lang == "tr":
        ask = rng.choice([f"{city} saatiyle şu an saat kaç?", f"Şu an {city} için yerel saat nedir?",
                          f"Saat kaç: {city}"])
        return ask, {"city": city}, result, f"{city} saatiyle şu an {now}."
    ask = rng.choice([f"What time is it in {city}?", f"Tell me the local time in {city}.",
                      f"Current time in {city}?"])
    return ask, {"city": city}, result, f"It is {now} in {city}."


def _reminder(rng: random.Random, lang: str) -> Draw:
    en, tr = rng.choice(REMINDERS)
    at = f"{rng.randint(6, 22):02d}:{rng.choice(['00', '15', '30', '45'])}"
    result = {"status": "ok", "time": at}
    if lang == "tr":
        ask = rng.choice([f"Saat {at} için hatırlatıcı kur: {tr}", f"{at} hatırlatıcısı: {tr}",
                          f"Bana hatırlat, saat {at}: {tr}"])
        return ask, {"text": tr, "time": at}, result, f"Tamam, hatırlatıcı kuruldu ({at}): {tr}."
    ask = rng.choice([f"Remind me to {en} at {at}.", f"Set a reminder at {at}: {en}",
                      f"At {at}, remind me to {en}."])
    return ask, {"text": en, "time": at}, result, f"Done: at {at} I will remind you to {en}."


def _units(rng: random.Random, lang: str) -> Draw:
    (source, target), factor = rng.choice(sorted(UNITS.items()))
    value = _number(rng)
    converted = round(value * factor, 2)
    args = {"value": value, "from_unit": source, "to_unit": target}
    if lang == "tr":
        ask = rng.choice([f"{_show(value)} {source} kaç {target} eder?",
                          f"{_show(value)} {source} değerini {target} birimine çevir."])
    else:
        ask = rng.choice([f"Convert {_show(value)} {source} to {target}.",
                          f"How many {target} is {_show(value)} {source}?"])
    return ask, args, {**args, "result": converted}, f"{_show(value)} {source} = {_show(converted)} {target}."


def _no_tool(rng: random.Random, lang: str) -> tuple[str, str]:
    """(request, answer) that no tool serves: sums, thanks and greetings."""
    kind = rng.random()
    if kind < 0.7:
        a, b = rng.randint(1, 99), rng.randint(1, 99)
        ask = rng.choice([f"{a} + {b} kaç eder?", f"{a} ile {b} toplamı nedir?"] if lang == "tr"
                         else [f"What is {a} + {b}?", f"Add {a} and {b}."])
        return ask, str(a + b)
    if lang == "tr":
        return rng.choice([("Teşekkürler!", "Rica ederim!"), ("Merhaba!", "Merhaba! Size nasıl yardımcı olabilirim?"),
                           ("Günaydın!", "Günaydın! Size nasıl yardımcı olabilirim?"),
                           ("Çok sağ ol, işime yaradı.", "Rica ederim, ne zaman isterseniz!")])
    return rng.choice([("Thanks!", "You're welcome!"), ("Hello!", "Hello! How can I help you?"),
                       ("Good morning!", "Good morning! How can I help you?"),
                       ("Thank you, that helped.", "You're welcome, any time!")])


TOOL_TASKS: dict[str, Callable[[random.Random, str], Draw]] = {
    "get_weather": _weather, "convert_currency": _currency, "get_local_time": _time,
    "create_reminder": _reminder, "convert_units": _units,
}
ALL_TOOL_TASKS = (*TOOL_TASKS, NO_TOOL)


def uses_tool_tasks(tasks: list[str]) -> bool:
    """Whether ``data.synthetic.tasks`` names the tool-calling tasks (UsageError when mixed with others)."""
    tool = [t for t in tasks if t in ALL_TOOL_TASKS]
    if tool and len(tool) != len(tasks):
        other = sorted(set(tasks) - set(ALL_TOOL_TASKS))
        raise UsageError(f"data.synthetic.tasks mixes tool-calling tasks {tool} with instruction tasks {other}: "
                         f"tool-calling records are conversations (format messages), the others alpaca records; "
                         f"use one kind per recipe")
    return bool(tool)


def tool_schema(name: str) -> dict[str, Any]:
    """The OpenAI function schema of one tool."""
    return {"type": "function", "function": {"name": name, **TOOL_SCHEMAS[name]}}


def _offered(rng: random.Random, needed: str | None) -> list[dict[str, Any]]:
    """The tools a request is offered, in random order: the one it needs and at most one other (each schema is
    60-90 tokens: training time on a CPU grows with them), or one or two for a request that needs none."""
    others = [name for name in TOOL_SCHEMAS if name != needed]
    names = rng.sample(others, rng.randint(0, 1) if needed else rng.randint(1, 2)) + ([needed] if needed else [])
    rng.shuffle(names)
    return [tool_schema(name) for name in names]


def tool_conversation(rng: random.Random, function: str, lang: str, with_result: bool, call_id: str) -> dict[str, Any]:
    """One record for the generated task ``function`` (a tool's name, or ``no_tool``): ``tools`` and OpenAI ``messages`` (user, then a call or a plain answer; with ``with_result``,
    the tool's output and a final answer after the call). Arguments are JSON text, as OpenAI sends them."""
    if function == NO_TOOL:
        ask, answer = _no_tool(rng, lang)
        return {"tools": _offered(rng, None), "messages": [{"role": "user", "content": ask},
                                                           {"role": "assistant", "content": answer}]}
    ask, args, result, final = TOOL_TASKS[function](rng, lang)
    call = {"id": call_id, "type": "function",
            "function": {"name": function, "arguments": json.dumps(args, ensure_ascii=False)}}
    messages: list[dict[str, Any]] = [{"role": "user", "content": ask},
                                      {"role": "assistant", "content": None, "tool_calls": [call]}]
    if with_result:
        messages += [{"role": "tool", "tool_call_id": call_id, "content": json.dumps(result, ensure_ascii=False)},
                     {"role": "assistant", "content": final}]
    return {"tools": _offered(rng, function), "messages": messages}


def _request_key(messages: list[dict[str, Any]]) -> str:
    """What makes a request distinct: its text and the answer to it (the call's name and arguments, or text)."""
    answer = messages[1]
    reply = answer["tool_calls"][0]["function"] if answer.get("tool_calls") else answer["content"]
    return json.dumps([messages[0]["content"], reply], ensure_ascii=False, sort_keys=True)


def generate_tool_records(num_records: int, seed: int, languages: list[str], tasks: list[str],
                          tool_results: float = 0.25) -> Iterator[dict[str, Any]]:
    """Yield distinct tool-calling records (``tools``, ``messages``) plus id, task and lang; seeded.

    Tasks are drawn evenly; ``tool_results`` is the share of calls followed by the tool's output and a final
    answer. A request (with its answer) never repeats, so no test request is also a training request.
    """
    unknown = sorted(set(tasks) - set(ALL_TOOL_TASKS))
    if unknown:
        raise UsageError(f"unknown tool-calling task(s) {unknown}; choose from {list(ALL_TOOL_TASKS)}")
    rng = random.Random(seed)

    def draw(index: int) -> tuple[str, str, dict[str, Any]]:
        function, lang = rng.choice(tasks), rng.choice(languages)
        with_result = function != NO_TOOL and rng.random() < tool_results
        return function, lang, tool_conversation(rng, function, lang, with_result, f"call_{index:06d}")

    drawn = distinct_draws(draw, lambda record: _request_key(record["messages"]), num_records)
    for index, (function, lang, record) in enumerate(drawn):
        yield {"id": f"tool-{index:06d}", "task": function, "lang": lang, **record}


def synthetic_tool_records(cfg: DataConfig, seed: int) -> Iterator[dict[str, Any]]:
    """The records of a recipe's ``data.synthetic`` section with tool-calling tasks (format messages only)."""
    if cfg.format != "messages":
        raise UsageError(f"data.synthetic.tasks are tool-calling tasks, which make conversations: set "
                         f"data.format: messages (it is {cfg.format})")
    syn = cfg.synthetic
    return generate_tool_records(syn.num_records, seed, list(syn.languages), list(syn.tasks), syn.tool_results)
