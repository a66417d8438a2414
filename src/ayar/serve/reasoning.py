"""A generated answer split into its reasoning and its final answer, as vLLM's reasoning parsers return them.

A thinking model writes ``<think>...</think>`` before its answer; OpenAI-compatible servers return the
block's text as ``reasoning_content`` and the rest as ``content``. A chat template may open the block in
the prompt itself (its generation prompt ends with ``<think>``): the answer then starts inside the reasoning.
An answer cut off before ``</think>`` is all reasoning; one that opens no block is all content.

The whole answer is split by ``ayar.data.reasoning.split_reasoning`` (evaluation splits answers alike); the
state machine here splits a stream so that the pieces joined are exactly that split of the whole answer.
"""

from __future__ import annotations

from ayar.data.reasoning import THINK_CLOSE, THINK_OPEN


def template_thinks(chat_template: str | None, reasoning_trained: bool = False) -> bool:
    """Whether a model's answers are parsed for reasoning: its template has think tags, or it was trained on
    reasoning written inline (its contract's ``reasoning_used``), so it writes them whatever the template."""
    return reasoning_trained or bool(chat_template and THINK_CLOSE in chat_template)


def _partial_tag(text: str, tag: str) -> int:
    """Length of the longest end of ``text`` that begins ``tag`` (a tag cut between two chunks)."""
    return next((k for k in range(min(len(text), len(tag) - 1), 0, -1) if text.endswith(tag[:k])), 0)


class ReasoningStream:
    """Splits a streamed answer chunk by chunk: ``feed`` each delta, then ``finish``; each returns
    (reasoning delta, content delta). Text that may still turn out to be a tag, or whitespace the whole
    answer would strip, is held until the next chunk decides it."""

    def __init__(self, opened: bool = False) -> None:
        self.state = "reasoning" if opened else "start"  # start -> reasoning -> after -> content
        self.held = ""
        self.began = False  # the reasoning's first non-space character is out (leading space is dropped)
        self.spaces = ""  # reasoning whitespace that is only sent when more reasoning follows it

    def feed(self, delta: str) -> tuple[str, str]:
        self.held += delta
        reasoning, content = "", ""
        while True:
            if self.state == "start":
                ahead = self.held.lstrip()
                if ahead.startswith(THINK_OPEN):
                    self.held, self.state = ahead[len(THINK_OPEN):], "reasoning"
                    continue
                if THINK_OPEN.startswith(ahead):  # nothing yet, or a tag begun: undecided
                    return reasoning, content
                self.state = "content"
            if self.state == "reasoning":
                end = self.held.find(THINK_CLOSE)
                if end < 0:
                    keep = _partial_tag(self.held, THINK_CLOSE)
                    reasoning += self._reasoning(self.held[:len(self.held) - keep])
                    self.held = self.held[len(self.held) - keep:]
                    return reasoning, content
                reasoning += self._reasoning(self.held[:end])
                self.held, self.state, self.spaces = self.held[end + len(THINK_CLOSE):], "after", ""
            if self.state == "after":
                self.held = self.held.lstrip()
                if not self.held:
                    return reasoning, content
                self.state = "content"
            content += self.held
            self.held = ""
            return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What is still held once the answer ended."""
        held, self.held = self.held, ""
        if self.state == "start":
            return "", held  # an answer that never opened a block: all content, as it was
        if self.state == "reasoning":
            return self._reasoning(held), ""
        return "", ""

    def _reasoning(self, piece: str) -> str:
        """Reasoning text to send now: leading whitespace dropped, trailing whitespace held back."""
        if not self.began:
            piece = piece.lstrip()
            if not piece:
                return ""
            self.began = True
        core = piece.rstrip()
        if not core:
            self.spaces += piece
            return ""
        out, self.spaces = self.spaces + core, piece[len(core):]
        return out
