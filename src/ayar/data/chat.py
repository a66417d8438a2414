"""Chat records in the shapes public datasets use, normalised to one internal shape.

The internal message is what Hugging Face chat templates take::

    {"role": "system" | "user" | "assistant" | "tool", "content": str,
     "tool_calls": [{"type": "function", "function": {"name": str, "arguments": {...}}, "id"?: str}],  # assistant
     "tool_call_id"?: str, "name"?: str,                                                            # tool
     "train"?: bool}                                                   # assistant: learn this turn or not

Read here: OpenAI ``messages`` (content as a string or a list of text parts, a part's text under
``text`` or, as LLaMA-Factory's v1 data writes it, ``value``; ``tool_calls`` with
JSON-string or object arguments; ``tool`` messages; per-turn ``weight``/``loss_weight``/``train``),
sharegpt ``conversations`` (``from``/``value``, with the ``function_call`` and ``observation``
roles and a ``tools`` column of LLaMA-Factory's tool data), preference pairs (strings, sharegpt,
OpenAI-style, TRL-style, OpenAI's ``input``/``preferred_output``) and KTO records. Preference and KTO
records become the conversational shape TRL's DPO and KTO trainers take::

    preference: {"prompt": [messages], "chosen": [assistant messages], "rejected": [assistant messages]}
    kto:        {"prompt": [messages], "completion": [assistant messages], "label": bool}

Hand-written because no library reads these dataset shapes into one form with per-line reasons:
TRL's ``data_utils`` converts only already-conversational columns and fails the whole dataset on
the first bad record.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any


class RecordError(ValueError):
    """Why one record does not fit its shape."""


MESSAGE_ROLES = {"system", "developer", "user", "assistant", "tool"}
SHAREGPT_ROLES = {"system", "human", "user", "gpt", "assistant", "function_call", "observation", "tool"}
SHAREGPT_TO_ROLE = {"system": "system", "human": "user", "user": "user", "gpt": "assistant",
                    "assistant": "assistant", "function_call": "assistant", "observation": "tool", "tool": "tool"}
LEARN_FLAGS = ("train", "weight", "loss_weight")  # per-turn keys that say whether a turn is learned


# ---------------------------------------------------------------- pieces


def _part_text(part: Any, where: str) -> str:
    """One content part's text: a string, or a text part whose text is under ``text`` (OpenAI) or ``value``
    (LLaMA-Factory's v1 data)."""
    if isinstance(part, str):
        return part
    if not isinstance(part, dict):
        raise RecordError(f"{where} must be a string or a text part object, got {type(part).__name__}")
    kind = part.get("type")
    if kind is None:
        raise RecordError(f"{where} has no 'type': a text part is {{\"type\": \"text\", \"text\": \"...\"}}")
    if kind != "text":
        raise RecordError(f"{where} is a {kind!r} part: only text parts are read (no images or audio yet)")
    for key in ("text", "value"):
        if isinstance(part.get(key), str):
            return part[key]
    found = ", ".join(f"{k!r} ({type(v).__name__})" for k, v in part.items() if k != "type") or "no other key"
    raise RecordError(f"{where} is a 'text' part without a string 'text' (or 'value'); it has {found}")


def content_text(value: Any, where: str) -> str:
    """A message's content as text: a string, None (empty), or a list of text parts joined."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(_part_text(part, f"{where}[{index}]") for index, part in enumerate(value))
    raise RecordError(f"{where} must be a string or a list of text parts, got {type(value).__name__}")


def _json_value(value: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{where} is not valid JSON: {exc.msg} (column {exc.pos + 1})") from None


def normalize_tools(value: Any, where: str = "tools") -> list[dict[str, Any]] | None:
    """Function schemas as ``[{"type": "function", "function": {name, description, parameters}}]``.

    Takes a list or a JSON string of one (LLaMA-Factory stores it as a string), wrapped (OpenAI) or bare.
    """
    value = _json_value(value, where)
    if value in (None, "", []):
        return None
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list):
        raise RecordError(f"{where} must be a list of function schemas, got {type(value).__name__}")
    tools = []
    for index, tool in enumerate(value):
        schema = tool.get("function") if isinstance(tool, dict) and "function" in tool else tool
        if not isinstance(schema, dict) or not isinstance(schema.get("name"), str) or not schema["name"]:
            raise RecordError(f"{where}[{index}] must be a function schema with a 'name'")
        tools.append({"type": "function", "function": schema})
    return tools


def _tool_call(call: Any, where: str) -> dict[str, Any]:
    """One call as ``{"type": "function", "function": {"name", "arguments": {...}}}`` (arguments an object,
    as chat templates render them with ``tojson``; OpenAI sends them as a JSON string)."""
    if not isinstance(call, dict):
        raise RecordError(f"{where} must be an object, got {type(call).__name__}")
    function = call.get("function", call)
    if not isinstance(function, dict) or not isinstance(function.get("name"), str) or not function["name"]:
        raise RecordError(f"{where} has no function name")
    arguments = function.get("arguments", function.get("parameters", {}))
    arguments = _json_value(arguments, f"{where}.arguments")
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise RecordError(f"{where}.arguments must be a JSON object, got {type(arguments).__name__}")
    out: dict[str, Any] = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
    if isinstance(call.get("id"), str):
        out["id"] = call["id"]
    return out


def _learn_flag(turn: dict[str, Any], where: str) -> bool | None:
    """A turn's ``train``/``weight``/``loss_weight`` as a bool (None when it has none)."""
    for key in LEARN_FLAGS:
        if key not in turn or turn[key] is None:
            continue
        value = turn[key]
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise RecordError(f"{where}.{key} must be true/false or 0/1, got {value!r}")
    return None


def _finish(message: dict[str, Any], turn: dict[str, Any], where: str) -> dict[str, Any]:
    """Carry a turn's learn flag onto the message; only assistant turns can be learned."""
    learn = _learn_flag(turn, where)
    if learn is None:
        return message
    if message["role"] != "assistant":
        if learn:
            raise RecordError(f"{where} is a {message['role']} turn marked to be learned: only assistant "
                              f"turns are learned")
        return message
    message["train"] = learn
    return message


# ---------------------------------------------------------------- messages and sharegpt


def normalize_message(turn: Any, where: str) -> dict[str, Any]:
    """One OpenAI-style message in the internal shape."""
    if not isinstance(turn, dict):
        raise RecordError(f"{where} must be an object, got {type(turn).__name__}")
    role = turn.get("role")
    if role not in MESSAGE_ROLES:
        raise RecordError(f"{where}.role must be one of {sorted(MESSAGE_ROLES)}, got {role!r}")
    role = "system" if role == "developer" else role
    if role == "user" and turn.get("content") is None:
        raise RecordError(f"{where}.content is missing: a user turn needs a string or a list of text parts")
    content = turn.get("content")
    if role == "tool" and isinstance(content, dict):  # a tool's result stored as an object: its JSON text
        content = json.dumps(content, ensure_ascii=False)
    message: dict[str, Any] = {"role": role, "content": content_text(content, f"{where}.content")}
    calls = turn.get("tool_calls")
    if calls:
        if role != "assistant":
            raise RecordError(f"{where} has tool_calls but is a {role} turn")
        if not isinstance(calls, list):
            raise RecordError(f"{where}.tool_calls must be a list, got {type(calls).__name__}")
        message["tool_calls"] = [_tool_call(c, f"{where}.tool_calls[{i}]") for i, c in enumerate(calls)]
    elif role == "assistant" and turn.get("content") is None:
        raise RecordError(f"{where}.content is missing and the turn has no tool_calls: an assistant turn needs "
                          f"one of them")
    if role == "tool":
        for key in ("tool_call_id", "name"):
            if isinstance(turn.get(key), str):
                message[key] = turn[key]
    return _finish(message, turn, where)


def normalize_messages(turns: Any, key: str = "messages") -> list[dict[str, Any]]:
    """A non-empty list of OpenAI-style messages in the internal shape."""
    if turns is None:
        raise RecordError(f"missing field '{key}'")
    if not isinstance(turns, list) or not turns:
        raise RecordError(f"field '{key}' must be a non-empty list")
    return [normalize_message(turn, f"{key}[{index}]") for index, turn in enumerate(turns)]


def _sharegpt_calls(value: str, where: str) -> list[dict[str, Any]]:
    """A ``function_call`` turn's value: one ``{"name", "arguments"}`` object or a list of them, as JSON."""
    parsed = _json_value(value, where)
    calls = parsed if isinstance(parsed, list) else [parsed]
    if not calls:
        raise RecordError(f"{where} holds no call")
    return [_tool_call(call, f"{where}" if len(calls) == 1 else f"{where}[{i}]") for i, call in enumerate(calls)]


def sharegpt_turn(turn: Any, where: str) -> dict[str, Any]:
    """One sharegpt turn as an internal message."""
    if not isinstance(turn, dict):
        raise RecordError(f"{where} must be an object, got {type(turn).__name__}")
    source = turn.get("from")
    if source not in SHAREGPT_ROLES:
        raise RecordError(f"{where}.from must be one of {sorted(SHAREGPT_ROLES)}, got {source!r}")
    value = turn.get("value")
    if not isinstance(value, str):
        got = "nothing" if value is None else type(value).__name__
        raise RecordError(f"{where}.value must be a string, got {got}")
    role = SHAREGPT_TO_ROLE[source]
    if source == "function_call":
        message = {"role": "assistant", "content": "", "tool_calls": _sharegpt_calls(value, f"{where}.value")}
    else:
        message = {"role": role, "content": value}
    return _finish(message, turn, where)


def sharegpt_messages(record: dict[str, Any], key: str = "conversations") -> list[dict[str, Any]]:
    """A sharegpt record's conversation as internal messages, its ``system`` column first."""
    turns = record.get(key)
    if turns is None:
        raise RecordError(f"missing field '{key}'")
    if not isinstance(turns, list) or not turns:
        raise RecordError(f"field '{key}' must be a non-empty list")
    messages = [sharegpt_turn(turn, f"{key}[{index}]") for index, turn in enumerate(turns)]
    system = record.get("system")
    if isinstance(system, str) and system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": system})
    return messages


def message_text(message: dict[str, Any]) -> str:
    """A message's text for cleaning, hashing and length: its content, then its tool calls as JSON."""
    calls = message.get("tool_calls")
    if not calls:
        return message["content"]
    rendered = json.dumps([c["function"] for c in calls], ensure_ascii=False, sort_keys=True)
    return f"{message['content']}\n{rendered}" if message["content"] else rendered


def map_message_texts(message: dict[str, Any], fn: Callable[[str], str]) -> None:
    """Apply ``fn`` to a message's content and to every string inside its tool calls' arguments."""
    message["content"] = fn(message["content"])
    for call in message.get("tool_calls") or ():
        call["function"]["arguments"] = _map_strings(call["function"]["arguments"], fn)


def _map_strings(value: Any, fn: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_strings(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_strings(v, fn) for v in value]
    return value


# ---------------------------------------------------------------- preference and KTO


def _as_messages(value: Any, where: str, default_role: str) -> list[dict[str, Any]]:
    """A string (one message of ``default_role``), a message, a sharegpt turn or a list of either."""
    if isinstance(value, str):
        return [{"role": default_role, "content": value}]
    if isinstance(value, dict):
        value = [value]
    if not isinstance(value, list) or not value:
        raise RecordError(f"field '{where}' must be a string, a message or a non-empty list of messages")
    out = []
    for index, turn in enumerate(value):
        name = f"{where}[{index}]"
        if isinstance(turn, dict) and "from" in turn:
            out.append(sharegpt_turn(turn, name))
        else:
            out.append(normalize_message(turn, name))
    return out


def _prompt_of(record: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The prompt of a preference/KTO record from whichever field carries it (None when none does)."""
    if "prompt" in record:
        prompt = _as_messages(record.pop("prompt"), "prompt", "user")
    elif "conversations" in record:
        prompt = sharegpt_messages(record)
        record.pop("conversations")
    elif "messages" in record:
        prompt = normalize_messages(record.pop("messages"))
    elif isinstance(record.get("input"), dict) and "messages" in record["input"]:  # OpenAI preference tuning
        given = record.pop("input")
        prompt = normalize_messages(given["messages"], "input.messages")
        if given.get("tools") is not None and "tools" not in record:
            record["tools"] = given["tools"]
    else:
        return None
    system = record.pop("system", None)
    if isinstance(system, str) and system and prompt[0]["role"] != "system":
        prompt.insert(0, {"role": "system", "content": system})
    return prompt


def _responses(value: Any, where: str) -> list[dict[str, Any]]:
    messages = _as_messages(value, where, "assistant")
    if messages[-1]["role"] != "assistant":
        raise RecordError(f"field '{where}' must end with an assistant message")
    return messages


def _split_common_prefix(chosen: list[dict[str, Any]], rejected: list[dict[str, Any]]) -> tuple[list, list, list]:
    """Implicit prompt (Anthropic HH shape): the messages both full conversations share."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def normalize_preference(record: dict[str, Any]) -> dict[str, Any]:
    """Any supported preference shape as ``{"prompt", "chosen", "rejected"}`` lists of messages."""
    openai = "preferred_output" in record and "chosen" not in record  # OpenAI preference fine-tuning names
    chosen_key, rejected_key = ("preferred_output", "non_preferred_output") if openai else ("chosen", "rejected")
    for key in (chosen_key, rejected_key):
        if record.get(key) is None:
            raise RecordError(f"missing field '{key}'")
    prompt = _prompt_of(record)
    chosen = _responses(record.pop(chosen_key), chosen_key)
    rejected = _responses(record.pop(rejected_key), rejected_key)
    if prompt is None:
        prompt, chosen, rejected = _split_common_prefix(chosen, rejected)
        if not prompt:
            raise RecordError("missing field 'prompt' (and chosen/rejected share no conversation to take it from)")
    if chosen == rejected:
        raise RecordError("chosen and rejected are the same")
    record.update({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    normalize_tools_field(record)
    return record


def _label(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise RecordError(f"field 'label' must be true or false, got {value!r}")


def normalize_kto(record: dict[str, Any]) -> dict[str, Any]:
    """A KTO record (prompt or messages, a completion, a boolean label) as ``{"prompt", "completion", "label"}``.

    Without a ``completion`` field, the conversation's last assistant message is the completion.
    """
    if "label" not in record:
        raise RecordError("missing field 'label'")
    label = _label(record.pop("label"))
    completion_value = record.pop("completion", None)
    prompt = _prompt_of(record)
    if prompt is None:
        raise RecordError("missing field 'prompt' (or 'messages' / 'conversations')")
    if completion_value is None:
        if prompt[-1]["role"] != "assistant" or len(prompt) < 2:
            raise RecordError("missing field 'completion' (and the conversation does not end with an assistant turn)")
        prompt, completion = prompt[:-1], prompt[-1:]
    else:
        completion = _responses(completion_value, "completion")
    record.update({"prompt": prompt, "completion": completion, "label": label})
    normalize_tools_field(record)
    return record


def normalize_tools_field(record: dict[str, Any]) -> None:
    """A record's ``tools`` column, normalised in place to a list of OpenAI function schemas (dropped when empty)."""
    if "tools" in record:
        tools = normalize_tools(record["tools"])
        if tools is None:
            record.pop("tools")
        else:
            record["tools"] = tools
