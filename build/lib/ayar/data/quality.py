"""Quality filters: length in characters and tokens, repetition, symbol ratio, empty responses.

:meth:`QualityFilter.reason` names the first rule a record breaks, or returns None to keep it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ayar.recipe import FilterConfig


def repeated_line_ratio(text: str) -> float:
    """Share of non-empty lines that repeat an earlier line."""
    lines = [line.strip() for line in text.split("\n")]
    lines = [line for line in lines if line]
    if len(lines) < 2:
        return 0.0
    return 1.0 - len(set(lines)) / len(lines)


def repeated_ngram_ratio(text: str, n: int, words: list[str] | None = None) -> float:
    """Share of word n-grams that repeat an earlier n-gram (``words``: ``text.split()``, if already made)."""
    words = text.split() if words is None else words
    total = len(words) - n + 1
    if total < 2:
        return 0.0
    return 1.0 - len(set(zip(*(words[i:] for i in range(n)), strict=False))) / total


def _ngram_ratio_bound(words: list[str], n: int) -> float:
    """An upper bound of :func:`repeated_ngram_ratio` from distinct words alone (cheaper than the n-grams).

    The n-grams starting at each distinct word's first occurrence differ from each other, and at
    most n - 1 of those occurrences are too near the end to start one.
    """
    total = len(words) - n + 1
    if total < 2:
        return 0.0
    return 1.0 - max(len(set(words)) - n + 1, 0) / total


_SYMBOL = re.compile(r"[^\w\s]")  # with "_" (a \w character), the symbols


def symbol_ratio(text: str, words: list[str] | None = None) -> float:
    """Symbols (neither letters, digits nor whitespace) per letter or digit (``words``: ``text.split()``)."""
    words = text.split() if words is None else words
    # str.split() and regex \s agree on whitespace, so the non-space characters are the words' characters.
    non_space = sum(map(len, words))
    # str.isalnum() is regex \w without "_": only words that fail it can hold a symbol, and scanning
    # those few (in C) beats scanning the whole text; "_" is counted on its own.
    symbols = len(_SYMBOL.findall(" ".join([w for w in words if not w.isalnum()]))) + text.count("_")
    alnum = non_space - symbols
    return symbols / alnum if alnum else float(symbols)


class QualityFilter:
    """The recipe's filters; ``count_tokens`` (the target tokenizer) is needed only for token limits."""

    def __init__(self, cfg: FilterConfig, count_tokens: Callable[[str], int] | None = None) -> None:
        self.cfg = cfg
        self.count_tokens = count_tokens
        self.uses_tokens = cfg.min_tokens > 0 or cfg.max_tokens is not None

    def reason(self, text: str, responses: list[str] | None, words: list[str] | None = None) -> str | None:
        """Why this record is removed, or None.

        Args:
            text: all its fields. responses: its answers (None for shapes without).
            words: ``text.split()`` when the caller has it already.
        """
        cfg = self.cfg
        if cfg.drop_empty_response and responses is not None and (
            not responses or any(not r.strip() for r in responses)
        ):
            return "empty_response"
        if len(text) < cfg.min_chars:
            return "too_short"
        if len(text) > cfg.max_chars:
            return "too_long"
        if self.uses_tokens and self.count_tokens is not None:
            tokens = self.count_tokens(text)
            if tokens < cfg.min_tokens:
                return "too_few_tokens"
            if cfg.max_tokens is not None and tokens > cfg.max_tokens:
                return "too_many_tokens"
        if repeated_line_ratio(text) > cfg.max_repeated_line_ratio:
            return "repeated_lines"
        words = text.split() if words is None else words
        if _ngram_ratio_bound(words, cfg.ngram_size) > cfg.max_repeated_ngram_ratio and \
                repeated_ngram_ratio(text, cfg.ngram_size, words) > cfg.max_repeated_ngram_ratio:
            return "repeated_ngrams"
        if symbol_ratio(text, words) > cfg.max_symbol_ratio:
            return "symbol_ratio"
        return None
