"""Grammar-constrained decoding through llguidance: ``response_format`` (JSON matching a schema), a forced
tool call (``tool_choice`` required or a named function: one call of an offered function, its arguments
matching the function's schema), and a call the model chooses to make (``tool_choice`` auto: free text until
the model opens a call, then the same constraint on the call).

llguidance compiles a JSON schema against the tokenizer's vocabulary and, at each step, masks every token
that would leave the grammar. Measured on the CPU on SmolLM2's 49k-token vocabulary: about 0.9 ms a token,
against about 1.3 ms for xgrammar, which also pulls triton (about 1 GB) into a CPU install; llguidance is
one 8 MB wheel with no dependencies. Whitespace is not free in the grammar (the separators are json.dumps's
", " and ": "): a small model would otherwise loop on spaces and newlines until its answer is cut off
half-way; string values of a json_object answer are capped for the same reason (a json_schema answer's
strings follow the schema's own maxLength).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

LLGUIDANCE = "llguidance==1.9.1"
MAX_FREE_STRING = 256
"""Characters at most in a string value of a json_object answer or of a forced call's arguments where the
function's schema sets no bound (llguidance has no propertyNames: keys are not capped)."""
_ANY_JSON = {
    "$defs": {"value": {"anyOf": [
        {"type": "string", "maxLength": MAX_FREE_STRING}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
        {"type": "array", "items": {"$ref": "#/$defs/value"}},
        {"type": "object", "additionalProperties": {"$ref": "#/$defs/value"}}]}},
    "type": "object", "additionalProperties": {"$ref": "#/$defs/value"},
}
"""What json_object asks for: any JSON object, its string values capped."""
JSON_LAYOUT = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
"""No free whitespace, and the separators of Python's json.dumps and Jinja's tojson: what models saw most."""
CALL_TAGS = ("<tool_call>\n", "\n</tool_call>")
"""The wrapping of a call in templates that teach ``<tool_call>`` blocks (Hermes, Qwen2.5, chatml_tools)."""


def bounded_arguments(schema: Any) -> Any:
    """A function's parameters schema as a call's arguments are held to: every free string (no maxLength,
    enum, const or pattern of its own) capped at MAX_FREE_STRING, and an object that lists its properties
    takes no others unless it says so (as OpenAI's strict mode reads it). Function schemas rarely bound
    their strings, and a small model would write one until max_tokens cuts the call off, or invent keys."""
    if isinstance(schema, list):
        return [bounded_arguments(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: bounded_arguments(value) for key, value in schema.items()}
    types = schema.get("type")
    is_string = types == "string" or (isinstance(types, list) and "string" in types)
    if is_string and not {"maxLength", "enum", "const", "pattern"} & schema.keys():
        out["maxLength"] = MAX_FREE_STRING
    if isinstance(schema.get("properties"), dict) and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def call_schema(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """One call of one of ``tools`` as the templates write it: ``{"name": ..., "arguments": {...}}``, the
    arguments matching the function's parameters schema (bounded: see bounded_arguments)."""
    def one(function: dict[str, Any]) -> dict[str, Any]:
        return {"type": "object", "additionalProperties": False, "required": ["name", "arguments"],
                "properties": {"name": {"const": function["name"]},
                               "arguments": bounded_arguments(function.get("parameters") or {"type": "object"})}}

    calls = [one(tool["function"]) for tool in tools]
    return calls[0] if len(calls) == 1 else {"anyOf": calls}


def _json_rule(schema: dict[str, Any]) -> str:
    """A Lark rule body for JSON matching ``schema``, in ayar's fixed layout."""
    return "%json " + json.dumps({"x-guidance": JSON_LAYOUT, **schema})


def _call_json(tools: list[dict[str, Any]]) -> str:
    return _json_rule(call_schema(tools))


def call_grammar(tools: list[dict[str, Any]], tagged: bool) -> str:
    """A Lark grammar for exactly one call of one of ``tools``: in ``<tool_call>`` tags where the template
    teaches them, else the bare JSON call (Llama 3.1 style)."""
    body = _call_json(tools)
    if tagged:
        body = f"{json.dumps(CALL_TAGS[0])} {body} {json.dumps(CALL_TAGS[1])}"
    return f"start: {body}\n"


def chosen_call_grammar(tools: list[dict[str, Any]], tagged: bool, parallel: bool,
                        answer_schema: dict[str, Any] | None = None) -> str:
    """A Lark grammar for an answer that may call one of ``tools`` (``tool_choice`` auto): the model decides
    whether to call, and once it opens a call its name and arguments are held to an offered function and its
    schema. Without ``answer_schema`` the answer is free text around the calls; with it (a response_format
    beside the tools) the answer is that JSON or calls alone. ``parallel``: several calls, else one at most
    (and nothing after it).

    Tagged templates: free text is a lazy lexeme ending at ``<tool_call>``, so the lexer commits to the call
    the moment the tag is complete (a greedy free-text lexeme would swallow the tag and leave the call
    unconstrained). Bare JSON calls (Llama 3.1 style): an answer that starts with ``{`` is a call."""
    close = json.dumps(CALL_TAGS[1])
    calls = "call+" if parallel else "call"
    if answer_schema is not None:
        answer = _json_rule(answer_schema)
        call = (f"call: {json.dumps(CALL_TAGS[0])} {_call_json(tools)} {close} /\\n?/" if tagged
                else f"call: {_call_json(tools)}")
        return f"start: answer | {calls if tagged else 'call'}\nanswer: {answer}\n{call}\n"
    if not tagged:
        return f"start: TEXT | call\ncall: {_call_json(tools)}\nTEXT: /([^{{](.|\\n)*)?/\n"
    opening = json.dumps(CALL_TAGS[0].rstrip("\n"))
    return (f"start: {'call* TEXT' if parallel else 'TEXT | call'}\n"
            f"call: call_open \"\\n\" {_call_json(tools)} {close}\n"
            f"call_open[lazy]: TEXT {opening}\n"
            "TEXT: /(.|\\n)*/\n")


def json_object_schema() -> dict[str, Any]:
    return _ANY_JSON


class JsonGrammars:
    """JSON-schema grammars for one tokenizer."""

    def __init__(self, tokenizer: Any, vocab_size: int, stop_ids: set[int]) -> None:
        """vocab_size: the model's logit width (may exceed the tokenizer's); stop_ids: the tokens that end an
        answer, the only ones allowed once the JSON is complete."""
        self.tokenizer, self.vocab_size, self.stop_ids = tokenizer, vocab_size, sorted(stop_ids)
        self._vocabulary: Any = None
        self._lock = threading.Lock()  # compiled from request handlers' threads

    def _llg_tokenizer(self) -> Any:
        try:
            import llguidance.hf
        except ImportError:
            raise ValueError(f"response_format needs llguidance: pip install '{LLGUIDANCE}'") from None
        if self._vocabulary is None:  # about a second for a 49k vocabulary: once per engine
            self._vocabulary = llguidance.hf.from_tokenizer(self.tokenizer, n_vocab=self.vocab_size,
                                                            eos_token=self.stop_ids)
        return self._vocabulary

    def compile(self, schema: dict[str, Any]) -> Grammar:
        """The grammar of ``schema``; ValueError naming what is wrong with a schema it cannot take."""
        import llguidance

        with self._lock:
            vocabulary = self._llg_tokenizer()
        try:
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_LAYOUT)
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ValueError(f"cannot compile this JSON schema: {exc}") from None
        return self._checked(grammar, vocabulary, "this JSON schema")

    def compile_lark(self, lark: str, what: str) -> Grammar:
        """The grammar of a Lark text (``%json`` embeds a schema); ValueError naming ``what`` cannot compile."""
        import llguidance

        with self._lock:
            vocabulary = self._llg_tokenizer()
        return self._checked(llguidance.LLMatcher.grammar_from_lark(lark), vocabulary, what)

    def _checked(self, grammar: str, vocabulary: Any, what: str) -> Grammar:
        import llguidance

        error = llguidance.LLMatcher.validate_grammar(grammar, vocabulary)
        if error and not error.startswith("WARNING"):
            raise ValueError(f"cannot compile {what}: {error}")
        return Grammar(vocabulary, grammar, self.vocab_size)


class Grammar:
    """A compiled grammar; each generation takes a fresh :meth:`processor` (transformers) or
    :meth:`numpy_processor` (llama.cpp): it holds the parse state."""

    def __init__(self, vocabulary: Any, grammar: str, vocab_size: int) -> None:
        self.vocabulary, self.grammar, self.vocab_size = vocabulary, grammar, vocab_size

    def processor(self) -> LogitsProcessor:
        return _GrammarMask(_Matcher(self))

    def numpy_processor(self) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
        """llama-cpp-python's logits processor: (the ids so far, the next token's scores) -> the scores."""
        matcher = _Matcher(self)

        def mask(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
            allowed = matcher.allowed(int(input_ids[-1]), len(scores))
            scores[~allowed] = -np.inf
            return scores

        return mask


class _Matcher:
    """One answer's parse state: the tokens the grammar allows next, after consuming the last one sampled."""

    def __init__(self, grammar: Grammar) -> None:
        import llguidance

        self.matcher = llguidance.LLMatcher(grammar.vocabulary, grammar.grammar, log_level=0)
        self.started = False

    def allowed(self, last_id: int, width: int) -> np.ndarray:
        """A bool mask of ``width`` entries; ``last_id`` is the token sampled after the previous call (on the
        first call, the prompt's last token, not consumed)."""
        if self.started:
            self.matcher.consume_token(last_id)
        self.started = True
        if self.matcher.is_error():
            raise RuntimeError(f"the grammar rejected the answer: {self.matcher.get_error()}")
        allowed = np.zeros(width, dtype=bool)
        bias = np.frombuffer(self.matcher.compute_logit_bias(), dtype=np.uint8)[:width] > 0
        allowed[:len(bias)] = bias
        return allowed


class _GrammarMask(LogitsProcessor):
    """Masks the tokens the grammar does not allow next, for a batch of one row (a constrained job runs
    alone)."""

    def __init__(self, matcher: _Matcher) -> None:
        self.matcher = matcher

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        keep = torch.from_numpy(self.matcher.allowed(int(input_ids[0, -1]), scores.shape[-1])).to(scores.device)
        return scores.masked_fill(~keep, float("-inf"))


class GrammarConstraints:
    """The constrained decoding an engine offers once it has ``_grammars`` (a :class:`JsonGrammars` of its
    tokenizer): the QueuedEngine methods a request's response_format and tool_choice compile through."""

    tokenizer: Any
    _grammars: JsonGrammars

    def compile_constraint(self, schema: dict[str, Any]) -> Grammar:
        return self._grammars.compile(schema)

    def compile_call(self, tools: list[dict[str, Any]]) -> Grammar:
        return self._grammars.compile_lark(call_grammar(tools, self._tagged_calls()), "a call grammar for these tools")

    def compile_chosen_call(self, tools: list[dict[str, Any]], parallel: bool,
                            answer_schema: dict[str, Any] | None) -> Grammar:
        lark = chosen_call_grammar(tools, self._tagged_calls(), parallel, answer_schema)
        return self._grammars.compile_lark(lark, "a call grammar for these tools")

    def _tagged_calls(self) -> bool:
        """Whether the chat template writes calls in ``<tool_call>`` tags (else as bare JSON)."""
        return CALL_TAGS[0].strip() in str(self.tokenizer.chat_template or "")
