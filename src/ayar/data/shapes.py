"""Record shapes: what each data format's records hold, how a record is checked, and where its texts are.

A shape is checked after reading (:mod:`ayar.data.load`) and before any text is touched, so that the
cleaning, PII, quality and dedup steps can reach every text of a record through :func:`record_texts`
and :func:`map_texts` without knowing its format.
"""

from __future__ import annotations

import json
import typing
from collections.abc import Callable
from typing import Any

from ayar.data.chat import (
    RecordError,
    map_message_texts,
    message_text,
    normalize_kto,
    normalize_messages,
    normalize_preference,
    normalize_tools_field,
    sharegpt_messages,
)
from ayar.data.reasoning import REASONING_KEY, with_reasoning
from ayar.recipe import DataFormat

FORMATS = typing.get_args(DataFormat)  # the recipe schema states the formats once
# Shape -> (required text fields, optional text fields). Text fields must be strings.
SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "alpaca": (("instruction", "output"), ("input",)),
    "text": (("text",), ()),
    "classification": (("text",), ()),
    "seq2seq": (("source", "target"), ()),
    "preference": ((), ()),  # normalised by ayar.data.chat
    "kto": ((), ()),
    "messages": ((), ()),
    "sharegpt": ((), ()),
}
RESPONSE_FIELDS = {"alpaca": ("output",), "seq2seq": ("target",)}
CONVERSATION_FIELDS = {"preference": ("prompt", "chosen", "rejected"), "kto": ("prompt", "completion")}
ASSISTANT_SOURCES = ("gpt", "assistant", "function_call")  # sharegpt turns the model speaks
# Column names used by the seeds' Turkish data, read when the shape's own name is absent.
TURKISH_ALIASES = {"instruction": "talimat", "input": "girdi", "output": "yanıt", "text": "metin", "label": "etiket"}
CHAT_FORMATS = ("alpaca", "messages", "sharegpt")  # formats the training engine renders with the chat template


def _text_field(record: dict[str, Any], name: str, required: bool) -> None:
    value = record.get(name)
    if value is None:
        if required:
            raise RecordError(f"missing field '{name}'")
        return
    if not isinstance(value, str):
        raise RecordError(f"field '{name}' must be a string, got {type(value).__name__}")


def check_shape(record: Any, fmt: str, columns: dict[str, str] | None = None,
                check_unicode: bool = True) -> dict[str, Any]:
    """Rename mapped columns to the shape's names and check the shape; raise RecordError if wrong.

    ``check_unicode=False`` skips the lone-surrogate check, for records that cannot hold one.
    """
    if not isinstance(record, dict):
        raise RecordError(f"expected an object, got {type(record).__name__}")
    if not record:
        raise RecordError("empty record")
    for shape_field, column in (columns or {}).items():
        if column in record and column != shape_field:
            record[shape_field] = record.pop(column)
    for shape_field, alias in TURKISH_ALIASES.items():
        if shape_field not in record and alias in record and alias not in (columns or {}).values():
            record[shape_field] = record.pop(alias)
    required, optional = SHAPES[fmt]
    for name in required:
        _text_field(record, name, True)
    for name in optional:
        _text_field(record, name, False)
    if fmt == "messages":
        record["messages"] = _with_reasoning(normalize_messages(record.get("messages")), record["messages"])
        normalize_tools_field(record)
    elif fmt == "sharegpt":
        sharegpt_messages(record)  # checks every turn (function_call JSON included); the record keeps its shape
        normalize_tools_field(record)
    elif fmt in ("preference", "kto"):  # on a copy, so that a reject shows the record as it was read
        record = (normalize_preference if fmt == "preference" else normalize_kto)(dict(record))
    elif fmt == "classification":
        label = record.get("label")
        if label is None:
            raise RecordError("missing field 'label'")
        if isinstance(label, bool) or not isinstance(label, (str, int)):
            raise RecordError(f"field 'label' must be a string or an integer, got {type(label).__name__}")
    if not check_unicode:
        return record
    try:  # JSON escapes can smuggle in lone surrogates, which no UTF-8 file can hold
        json.dumps(record, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(f"invalid Unicode: a lone surrogate at character {exc.start} of the record") from None
    return record


def _with_reasoning(messages: list[dict[str, Any]], turns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The normalised messages with each assistant turn's reasoning in the internal form (a ``reasoning_content``
    or ``reasoning`` field of the turn, or a think block leading its content)."""
    for index, (message, turn) in enumerate(zip(messages, turns, strict=True)):
        with_reasoning(message, turn, f"messages[{index}]")
    return messages


def _reasoning_texts(messages: list[dict[str, Any]]) -> list[str]:
    """The reasoning traces of a conversation, after its other texts so a record without one keeps its texts."""
    return [m[REASONING_KEY] for m in messages if m.get(REASONING_KEY)]


def _pair_messages(record: dict[str, Any], fmt: str) -> list[dict[str, Any]]:
    return [m for name in CONVERSATION_FIELDS[fmt] for m in record[name]]


def record_texts(record: dict[str, Any], fmt: str) -> list[str]:
    """Every text of a record, in a fixed order (the fields that are cleaned, checked and hashed)."""
    if fmt == "messages":
        return [message_text(m) for m in record["messages"]] + _reasoning_texts(record["messages"])
    if fmt == "sharegpt":
        return [t["value"] for t in record["conversations"]]
    if fmt in CONVERSATION_FIELDS:
        return [message_text(m) for m in _pair_messages(record, fmt)]
    required, optional = SHAPES[fmt]
    return [record.get(name) or "" for name in (*required, *optional)]


def response_texts(record: dict[str, Any], fmt: str) -> list[str] | None:
    """The answers a model learns to give (None for shapes without one: text, classification)."""
    if fmt == "messages":
        return [message_text(m) for m in record["messages"] if m["role"] == "assistant"]
    if fmt == "sharegpt":
        return [t["value"] for t in record["conversations"] if t["from"] in ASSISTANT_SOURCES]
    if fmt in CONVERSATION_FIELDS:
        answers = [name for name in CONVERSATION_FIELDS[fmt] if name != "prompt"]
        return [message_text(m) for name in answers for m in record[name] if m["role"] == "assistant"]
    fields = RESPONSE_FIELDS.get(fmt)
    return None if fields is None else [record.get(name) or "" for name in fields]


def _leaf_values(value: Any) -> str:
    """The strings and numbers inside a JSON value (text that is not JSON is itself), space-separated."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError:
            return value
        return _leaf_values(parsed) if isinstance(parsed, dict | list) else value
    if isinstance(value, dict):
        return " ".join(_leaf_values(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(_leaf_values(v) for v in value)
    return "" if value is None else str(value)


def prose_texts(record: dict[str, Any], fmt: str) -> list[str] | None:
    """What the quality filters judge in a chat record with tool calls or tool outputs (None: a record without,
    judged on :func:`record_texts`). Calls and outputs are JSON, whose braces, quotes and snake_case keys would
    read as symbols and drop every tool record as ``symbol_ratio``: they count by their values instead."""
    if fmt == "sharegpt":
        turns = record["conversations"]
        if not any(t["from"] in ("function_call", "observation", "tool") for t in turns):
            return None
        return [_leaf_values(t["value"]) if t["from"] in ("function_call", "observation", "tool") else t["value"]
                for t in turns]
    if fmt == "messages":
        messages = record["messages"]
    elif fmt in CONVERSATION_FIELDS:
        messages = _pair_messages(record, fmt)
    else:
        return None
    if not any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        return None
    texts = []
    for message in messages:
        texts.append(_leaf_values(message["content"]) if message["role"] == "tool" else message["content"])
        texts += [_leaf_values(call["function"]["arguments"]) for call in message.get("tool_calls") or ()]
    return texts + _reasoning_texts(messages)


def map_texts(record: dict[str, Any], fmt: str, fn: Callable[[str], str]) -> None:
    """Apply ``fn`` to every text of a record, in place."""
    if fmt == "messages":
        for message in record["messages"]:
            map_message_texts(message, fn)
            if message.get(REASONING_KEY):  # cleaned and scrubbed of PII like the answer
                message[REASONING_KEY] = fn(message[REASONING_KEY])
        return
    if fmt == "sharegpt":
        for turn in record["conversations"]:
            turn["value"] = fn(turn["value"])
        return
    if fmt in CONVERSATION_FIELDS:
        for message in _pair_messages(record, fmt):
            map_message_texts(message, fn)
        return
    required, optional = SHAPES[fmt]
    for name in (*required, *optional):
        if isinstance(record.get(name), str):
            record[name] = fn(record[name])
