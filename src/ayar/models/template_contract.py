"""The train-to-serve contract: how the trained model's conversations look as text and as token ids.

A fine-tune that works inside the framework and answers garbage (or never stops) in another server is
almost always a template or tokenizer that changed between training and serving. At training time
:func:`write_contract` renders a few reference conversations with the tokenizer's saved chat template and
stores their text, token ids and the stop tokens in ``<model_dir>/ayar_contract.json`` (with a tool
conversation when training had tools, and one with reasoning when it had reasoning traces); serve, batch and
export call :func:`check_contract` (or :func:`check_token_ids` for a tokenizer outside transformers, such
as llama.cpp's) and refuse a folder that no longer renders and tokenizes them identically.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ayar.console import say
from ayar.data.templates import end_of_turn, messages_for_template, template_renders_tools
from ayar.errors import UsageError

CONTRACT_FILE = "ayar_contract.json"
VERSION = 1
FORCE_HINT = "pass --force to use it anyway"

# Turkish letters, digits, code and doubled whitespace: what tokenizers most often split differently.
_SYSTEM = {"role": "system", "content": "Kısa ve doğru yanıt ver."}
_REFERENCE: dict[str, list[dict[str, Any]]] = {
    "no_system": [
        {"role": "user", "content": "Merhaba! İstanbul'un nüfusu kaç?"},
        {"role": "assistant", "content": "Yaklaşık 15,6 milyon (2023)."},
    ],
    "system": [
        _SYSTEM,
        {"role": "user", "content": "Write `print(2 ** 10)` output.\n\n  Then stop."},
        {"role": "assistant", "content": "1024"},
    ],
    "multi_turn": [
        _SYSTEM,
        {"role": "user", "content": "Çağrı ile Şule kaç yaşında?"},
        {"role": "assistant", "content": "Çağrı 31, Şule 28."},
        {"role": "user", "content": "Toplamları?"},
        {"role": "assistant", "content": "59."},
    ],
}
_TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
_TOOL_CONVERSATION = [
    {"role": "user", "content": "Ankara'da hava nasıl?"},
    {"role": "assistant", "content": "", "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Ankara"}}}]},
    {"role": "tool", "content": '{"temp_c": 12, "sky": "bulutlu"}'},
    {"role": "assistant", "content": "Ankara'da 12 °C, bulutlu."},
]

# Two turns, so a template that keeps (or drops) the first turn's reasoning in the history is pinned as well.
_REASONING_CONVERSATION = [
    _SYSTEM,
    {"role": "user", "content": "Ali'nin 3 elması var, 2 tane daha alıyor. Kaç elması olur?"},
    {"role": "assistant", "content": "5 elma.", "reasoning_content": "3 + 2 = 5; birimi koru."},
    {"role": "user", "content": "Ya 4 tane daha alırsa?"},
    {"role": "assistant", "content": "9 elma.", "reasoning_content": "5 + 4 = 9."},
]


def contract_path(model_dir: Path) -> Path:
    """Where a model folder keeps its contract."""
    return Path(model_dir) / CONTRACT_FILE


# Templates that print today's date (Llama 3.x: ``strftime_now`` unless ``date_string`` is given) would
# break the contract every midnight; a fixed date keeps the text about the template, not the calendar.
FIXED_DATE = "26 Jul 2024"


def _render(tokenizer: Any, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None,
            generation: bool) -> str:
    """render_conversation (generation False) or render_prompt (True) of ayar.data.templates, with the date
    fixed (their signatures take no template variables; the arguments are otherwise the same)."""
    return tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                         add_generation_prompt=generation, date_string=FIXED_DATE)


def _ids(tokenizer: Any, text: str) -> list[int]:
    # no special tokens added: the template writes its own (BOS included), as training tokenized it
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _entry(tokenizer: Any, name: str, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> dict:
    """One reference conversation: the whole text (as trained) and the prompt before its last answer (as served)."""
    text = _render(tokenizer, messages, tools, generation=False)
    prompt = _render(tokenizer, messages[:-1], tools, generation=True)
    return {"name": name, "messages": messages, "tools": tools, "text": text, "ids": _ids(tokenizer, text),
            "prompt": prompt, "prompt_ids": _ids(tokenizer, prompt)}


def _stop_tokens(tokenizer: Any) -> dict[str, dict[str, Any] | None]:
    """eos and the template's end-of-turn token (the same finder generation and serving use), with ids."""
    turn_end = end_of_turn(tokenizer)
    eos = tokenizer.eos_token
    return {"eos": {"token": eos, "id": tokenizer.convert_tokens_to_ids(eos)} if eos else None,
            "end_of_turn": {"token": turn_end, "id": tokenizer.convert_tokens_to_ids(turn_end)} if turn_end else None}


def _tool_entry(tokenizer: Any) -> dict | None:
    """The tool conversation, or None when the template drops tools (then serving cannot use them either)."""
    try:
        entry = _entry(tokenizer, "tools", _TOOL_CONVERSATION, _TOOLS)
    except Exception:  # a template that refuses tool messages: nothing to promise about them
        return None
    return entry if template_renders_tools(entry["text"], _TOOL_CONVERSATION, _TOOLS) is None else None


def _reasoning_entry(tokenizer: Any) -> dict | None:
    """The reasoning conversation with its reasoning as training rendered it (in the template's field, or
    inline), or None when the template drops reasoning (then training refused it, or dropped it)."""
    try:
        messages = messages_for_template(tokenizer, _REASONING_CONVERSATION, "learn")
        return _entry(tokenizer, "reasoning", messages, None)
    except Exception:  # a template that refuses the conversation or drops the reasoning: nothing to promise
        return None


def build_contract(tokenizer: Any, tools_used: bool, reasoning_used: bool = False) -> dict[str, Any]:
    """The contract of a tokenizer with a chat template (see the module docstring); with ``reasoning_used``
    (the training data had reasoning traces) it pins a conversation with reasoning too."""
    conversations = []
    for name, messages in _REFERENCE.items():
        try:
            conversations.append(_entry(tokenizer, name, messages, None))
        except Exception:  # a template that refuses a role (Gemma's: no system turn) cannot be served it either
            continue
    tool_entry = _tool_entry(tokenizer) if tools_used else None
    if tool_entry is not None:
        conversations.append(tool_entry)
    reasoning_entry = _reasoning_entry(tokenizer) if reasoning_used else None
    if reasoning_entry is not None:
        conversations.append(reasoning_entry)
    contract = {"version": VERSION, "tools_used": tools_used, "stop_tokens": _stop_tokens(tokenizer),
                "conversations": conversations}
    if reasoning_used:  # only then, so a contract without reasoning stays as it was
        contract["reasoning_used"] = True
    return contract


def write_contract(model_dir: Path, tokenizer: Any, tools_used: bool, reasoning_used: bool = False) -> Path | None:
    """Write ``<model_dir>/ayar_contract.json``; None (nothing written) for a tokenizer without a chat template."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    path = contract_path(model_dir)
    contract = build_contract(tokenizer, tools_used, reasoning_used)
    path.write_text(json.dumps(contract, indent=1, ensure_ascii=False), encoding="utf-8")
    return path


def read_contract(model_dir: Path) -> dict[str, Any] | None:
    """The folder's contract, or None when it has none (trained before contracts, or without a chat template)."""
    path = contract_path(model_dir)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path} is not a readable contract ({exc}); delete it or {FORCE_HINT}") from None


def _first_difference(expected: str | list, got: str | list) -> int:
    """Index of the first differing character or token (the shorter length when one is a prefix)."""
    return next((i for i, (a, b) in enumerate(zip(expected, got, strict=False)) if a != b),
                min(len(expected), len(got)))


def _differs(name: str, what: str, expected: str | list, got: str | list) -> str | None:
    """A description of the first difference of two renderings/tokenizations, or None when equal."""
    if expected == got:
        return None
    at = _first_difference(expected, got)
    unit = "character" if isinstance(expected, str) else "token"
    return (f"reference conversation '{name}' differs in its {what} at {unit} {at} "
            f"(at training {expected[at:at + 12]!r}, now {got[at:at + 12]!r})")


def _refuse(model_dir: Path, where: str, problem: str, force: bool) -> None:
    """Raise the contract's UsageError, or only say it when forced."""
    message = (f"{model_dir} does not match the chat template and tokenizer it was trained with ({where}): "
               f"{problem}; the model would see prompts it was not trained on or not stop; {FORCE_HINT}")
    if not force:
        raise UsageError(message)
    say(f"warning (--force): {message}")


def _compare(contract: dict[str, Any], tokenizer: Any) -> str | None:
    """The first difference between the contract and what the tokenizer renders now, or None."""
    if not getattr(tokenizer, "chat_template", None):
        return "the tokenizer has no chat template any more"
    now = _stop_tokens(tokenizer)
    for kind, stored in contract["stop_tokens"].items():
        if stored != now.get(kind):
            return f"stop token {kind} was {stored} at training, now {now.get(kind)}"
    for entry in contract["conversations"]:
        try:
            text = _render(tokenizer, entry["messages"], entry["tools"], generation=False)
            prompt = _render(tokenizer, entry["messages"][:-1], entry["tools"], generation=True)
        except Exception as exc:  # the template itself changed so much it fails on a trained conversation
            return f"reference conversation '{entry['name']}' no longer renders ({type(exc).__name__}: {exc})"
        problem = (_differs(entry["name"], "text", entry["text"], text)
                   or _differs(entry["name"], "prompt text", entry["prompt"], prompt)
                   or _differs(entry["name"], "token ids", entry["ids"], _ids(tokenizer, text))
                   or _differs(entry["name"], "prompt token ids", entry["prompt_ids"], _ids(tokenizer, prompt)))
        if problem:
            return problem
    return None


def check_contract(model_dir: Path, tokenizer: Any, force: bool = False, where: str = "transformers") -> bool:
    """Re-render and re-tokenize the folder's reference conversations with ``tokenizer``.

    Raises UsageError naming the first differing conversation and position (only a warning with force).
    A folder without a contract passes with a one-line note. Returns True when a contract was checked.
    """
    contract = read_contract(model_dir)
    if contract is None:
        say(f"note: {model_dir} has no {CONTRACT_FILE} (trained before ayar wrote one): template not checked")
        return False
    problem = _compare(contract, tokenizer)
    if problem:
        _refuse(Path(model_dir), where, problem, force)
    return True


def check_token_ids(model_dir: Path, tokenize_all: Callable[[list[str]], list[list[int]]], where: str,
                    force: bool = False) -> bool:
    """Compare the contract's token ids with another tokenizer's (``tokenize_all(texts)``, one id list per
    text, no BOS added, special tokens parsed): llama.cpp's for a GGUF export, asked once for every text.
    The stop tokens must be single tokens with the same ids. Returns True when a contract was checked (see
    check_contract for the rest).
    """
    contract = read_contract(model_dir)
    if contract is None:
        say(f"note: {model_dir} has no {CONTRACT_FILE}: {where} token ids not checked")
        return False
    stops = [stored for stored in contract["stop_tokens"].values() if stored is not None]
    texts = [s["token"] for s in stops] + [t for e in contract["conversations"] for t in (e["text"], e["prompt"])]
    ids = dict(zip(texts, tokenize_all(texts), strict=True))
    problem = None
    for kind, stored in contract["stop_tokens"].items():
        if stored is not None and ids[stored["token"]] != [stored["id"]]:
            problem = f"stop token {kind} {stored['token']!r} is {ids[stored['token']]}, at training {stored['id']}"
            break
    for entry in contract["conversations"] if problem is None else ():
        problem = (_differs(entry["name"], "token ids", entry["ids"], ids[entry["text"]])
                   or _differs(entry["name"], "prompt token ids", entry["prompt_ids"], ids[entry["prompt"]]))
        if problem:
            break
    if problem:
        _refuse(Path(model_dir), where, problem, force)
    return True
