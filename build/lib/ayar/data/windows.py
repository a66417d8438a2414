"""Long documents split into training windows, by tokens, at paragraph and sentence boundaries.

A window holds whole paragraphs while they fit; a paragraph longer than a window is cut at sentence
ends, and a sentence longer than a window at token boundaries. Consecutive windows share up to
``overlap`` tokens (whole trailing sentences or paragraphs of the previous window where they fit, else
its last tokens). Windows of one document carry ``window: {"doc", "index", "count"}``; only the last
gets an EOS in training (:func:`ends_document`).

Hand-written: ``datasets``/TRL pack or truncate token streams but do not cut text at paragraph and
sentence boundaries, and the data card needs windows per document before tokenization.
"""

from __future__ import annotations

import math
import re
from typing import Any

PARAGRAPH = re.compile(r".*?(?:\n[ \t]*\n\s*|\Z)", re.S)
SENTENCE = re.compile(r".*?(?:[.!?…]+[\"'”’)\]]*\s+|\n|\Z)", re.S)
WORD = re.compile(r"\S+\s*")
TOKENS_PER_WORD = 1.5  # without a tokenizer, a conservative estimate (Turkish BPE runs 1.3-1.8)


def ends_document(record: dict[str, Any]) -> bool:
    """True unless the record is a window followed by more windows of its document."""
    window = record.get("window")
    if not isinstance(window, dict):
        return True
    return int(window.get("index", 0)) + 1 >= int(window.get("count", 1))


def _pieces(pattern: re.Pattern, text: str) -> list[str]:
    return [m.group(0) for m in pattern.finditer(text) if m.group(0)]


class Windower:
    """Splits texts into windows of at most ``size`` tokens with ``overlap`` tokens shared."""

    def __init__(self, size: int, overlap: int = 0, tokenizer: Any = None) -> None:
        if size < 2:
            raise ValueError("a window must hold at least 2 tokens")
        if not 0 <= overlap < size:
            raise ValueError(f"overlap ({overlap}) must be at least 0 and less than the window ({size})")
        self.size, self.overlap, self.tokenizer = size, overlap, tokenizer
        self.measured_with = getattr(tokenizer, "name_or_path", "tokenizer") if tokenizer is not None \
            else f"words x {TOKENS_PER_WORD} (no tokenizer)"

    # -- measuring and cutting, with a tokenizer or by words

    def count(self, text: str) -> int:
        """Tokens of ``text``."""
        if self.tokenizer is not None:
            return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        return math.ceil(len(WORD.findall(text)) * TOKENS_PER_WORD)

    def _spans(self, text: str) -> list[tuple[int, int]]:
        """Character spans of the tokens (or words) of ``text``; each span runs to the next one's start."""
        if self.tokenizer is not None and getattr(self.tokenizer, "is_fast", False):
            offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            starts = [start for start, _ in offsets]
        else:
            starts = [m.start() for m in WORD.finditer(text)]
        if not starts:
            return [(0, len(text))]
        starts[0] = 0
        return list(zip(starts, [*starts[1:], len(text)], strict=True))

    def _per_unit(self) -> float:
        return 1.0 if self.tokenizer is not None else TOKENS_PER_WORD

    def cut(self, text: str, size: int) -> list[str]:
        """``text`` in consecutive pieces of at most ``size`` tokens."""
        spans = self._spans(text)
        step = max(1, int((size - 1 if size > 2 else size) / self._per_unit()))  # a cut piece may retokenize +1
        return [text[spans[i][0]:spans[min(i + step, len(spans)) - 1][1]] for i in range(0, len(spans), step)]

    def tail(self, text: str, size: int) -> str:
        """The last ``size`` tokens of ``text``."""
        spans = self._spans(text)
        keep = max(0, int(size / self._per_unit()))
        return text[spans[-keep][0]:] if keep and spans else ""

    # -- splitting

    def units(self, text: str) -> list[tuple[str, int]]:
        """(text, tokens) pieces no longer than a window: paragraphs, else sentences, else token runs."""
        out: list[tuple[str, int]] = []
        for paragraph in _pieces(PARAGRAPH, text):
            tokens = self.count(paragraph)
            if tokens <= self.size:
                out.append((paragraph, tokens))
                continue
            for sentence in _pieces(SENTENCE, paragraph):
                tokens = self.count(sentence)
                if tokens <= self.size:
                    out.append((sentence, tokens))
                else:
                    out += [(piece, self.count(piece)) for piece in self.cut(sentence, self.size)]
        return out

    def split(self, text: str) -> list[str]:
        """The windows of one text (the text itself when it fits one window)."""
        units = self.units(text)
        if sum(tokens for _, tokens in units) <= self.size:
            return [text]
        windows: list[str] = []
        current: list[tuple[str, int]] = []
        used = 0
        for unit in units:
            if current and used + unit[1] > self.size:
                windows.append("".join(t for t, _ in current).rstrip())
                current = self._overlap_of(current, unit[1])
                used = sum(tokens for _, tokens in current)
            current.append(unit)
            used += unit[1]
        if current:
            windows.append("".join(t for t, _ in current).rstrip())
        return [w for w in windows if w.strip()]

    def _overlap_of(self, previous: list[tuple[str, int]], next_tokens: int) -> list[tuple[str, int]]:
        """The start of the next window: the previous window's last units (or tokens) up to ``overlap``."""
        budget = min(self.overlap, self.size - next_tokens)
        if budget <= 0:
            return []
        kept: list[tuple[str, int]] = []
        used = 0
        for text, tokens in reversed(previous):
            if used + tokens > budget:
                break
            kept.insert(0, (text, tokens))
            used += tokens
        if kept:
            return kept
        tail = self.tail(previous[-1][0], budget)  # no whole unit fits: the last tokens
        return [(tail, self.count(tail))] if tail else []


def window_records(record: dict[str, Any], windower: Windower, doc: str,
                   field: str = "text") -> list[dict[str, Any]]:
    """One text record as its window records (the record itself when it fits one window)."""
    windows = windower.split(record[field])
    if len(windows) == 1:
        return [record]
    return [{**record, field: text, "window": {"doc": doc, "index": i, "count": len(windows)}}
            for i, text in enumerate(windows)]

