"""Grammar-constrained decoding for ``response_format``: JSON (matching a schema) through llguidance.

llguidance compiles a JSON schema against the tokenizer's vocabulary and, at each step, masks every token
that would leave the grammar. Measured on the CPU on SmolLM2's 49k-token vocabulary: about 0.9 ms a token,
against about 1.3 ms for xgrammar, which also pulls triton (about 1 GB) into a CPU install; llguidance is
one 8 MB wheel with no dependencies. Whitespace is not free in the grammar: a small model would otherwise
loop on spaces and newlines until its answer is cut off half-way; string values of a json_object answer are
capped for the same reason (a json_schema answer's strings follow the schema's own maxLength).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import torch
from transformers import LogitsProcessor

LLGUIDANCE = "llguidance==1.9.1"
MAX_FREE_STRING = 256
"""Characters at most in a string value of a json_object answer (llguidance has no propertyNames: keys are
not capped)."""
_ANY_JSON = {
    "$defs": {"value": {"anyOf": [
        {"type": "string", "maxLength": MAX_FREE_STRING}, {"type": "number"}, {"type": "boolean"}, {"type": "null"},
        {"type": "array", "items": {"$ref": "#/$defs/value"}},
        {"type": "object", "additionalProperties": {"$ref": "#/$defs/value"}}]}},
    "type": "object", "additionalProperties": {"$ref": "#/$defs/value"},
}
"""What json_object asks for: any JSON object, its string values capped."""


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
            grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, defaults={"whitespace_flexible": False})
        except (ValueError, TypeError, RuntimeError) as exc:
            raise ValueError(f"cannot compile this JSON schema: {exc}") from None
        error = llguidance.LLMatcher.validate_grammar(grammar, vocabulary)
        if error and not error.startswith("WARNING"):
            raise ValueError(f"cannot compile this JSON schema: {error}")
        return Grammar(vocabulary, grammar, self.vocab_size)


class Grammar:
    """A compiled grammar; each ``generate`` call takes a fresh :meth:`processor` (it holds the parse state)."""

    def __init__(self, vocabulary: Any, grammar: str, vocab_size: int) -> None:
        self.vocabulary, self.grammar, self.vocab_size = vocabulary, grammar, vocab_size

    def processor(self) -> LogitsProcessor:
        return _GrammarMask(self)


class _GrammarMask(LogitsProcessor):
    """Masks the tokens the grammar does not allow next, for a batch of one row (a constrained job runs
    alone)."""

    def __init__(self, grammar: Grammar) -> None:
        import llguidance

        self.matcher = llguidance.LLMatcher(grammar.vocabulary, grammar.grammar, log_level=0)
        self.vocab_size, self.started = grammar.vocab_size, False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.started:  # the token sampled after the previous call
            self.matcher.consume_token(int(input_ids[0, -1]))
        self.started = True
        if self.matcher.is_error():
            raise RuntimeError(f"the grammar rejected the answer: {self.matcher.get_error()}")
        allowed = np.frombuffer(self.matcher.compute_logit_bias(), dtype=np.uint8)[:scores.shape[-1]] > 0
        keep = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
        keep[:len(allowed)] = torch.from_numpy(allowed.copy()).to(scores.device)
        return scores.masked_fill(~keep, float("-inf"))
