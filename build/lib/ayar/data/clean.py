"""Text cleaning: mojibake repair, HTML stripping, NFC, control characters, whitespace, Turkish-aware casing.

Each step is switched on and off by ``CleanConfig``; :class:`TextCleaner` tells which steps
changed a text, so the data card can report every step.
"""

from __future__ import annotations

import re
import unicodedata
from html.parser import HTMLParser

import ftfy

from ayar.recipe import CleanConfig

TURKIC = {"tr", "az", "turkish", "türkçe", "turkce"}  # languages with dotted and dotless i

# A Latin-1/cp1252 reading of a UTF-8 lead byte followed by a continuation byte: the shape of
# mojibake. ftfy's own check costs ~10 us per string; this regex lets clean text skip it.
_MOJIBAKE_HINT = re.compile(
    "[\u00c2-\u00f4][\u0080-\u00bf\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc"
    "\u2013\u2014\u2018-\u201e\u2020-\u2022\u2026\u2030\u2039\u203a\u20ac\u2122]"
)
# C0/C1 control characters except tab and newline, plus zero-width space and byte-order mark.
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]")
_SPACES = re.compile(r"[^\S\n]+")  # any whitespace run except newlines
_MANY_NEWLINES = re.compile(r"\n{3,}")
_ODD_SPACE = re.compile(r"[^\S \n]")  # whitespace other than a space or a newline
_TAG_HINT = re.compile(r"<[A-Za-z/!]|&[#A-Za-z]")


def is_turkic(lang: str | None) -> bool:
    """True for languages whose casing maps I to ı and İ to i (Turkish, Azerbaijani)."""
    return bool(lang) and lang.lower().split("-")[0].split("_")[0] in TURKIC


def lower_text(text: str, lang: str | None) -> str:
    """Lower-case with the language's rules: in Turkish I→ı and İ→i; otherwise Python's rules.

    ``str.lower()`` maps I→i (wrong in Turkish) and İ→'i̇' (i plus a combining dot), so İ is
    mapped to a plain i first in every language.
    """
    if is_turkic(lang):
        text = text.replace("I", "ı")
    return text.replace("İ", "i").lower()


class _TextOnly(HTMLParser):
    """Collects the text of an HTML fragment, leaving out scripts and styles."""

    _SKIP = {"script", "style"}
    _BREAKS = {"br", "p", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BREAKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def strip_html(text: str) -> str:
    """The text of an HTML fragment (tags dropped, entities decoded, scripts and styles removed)."""
    if not _TAG_HINT.search(text):
        return text
    parser = _TextOnly()
    parser.feed(text)
    parser.close()
    return "".join(parser.parts)


def fix_mojibake(text: str) -> str:
    """Repair UTF-8 text that was decoded as Latin-1/cp1252 (e.g. 'BaÅŸkent' → 'Başkent') with ftfy."""
    if text.isascii() or not _MOJIBAKE_HINT.search(text):
        return text
    return ftfy.fix_encoding(text)


def strip_control(text: str) -> str:
    """Drop control characters (tab and newline stay)."""
    # Every character _CONTROL matches is non-printable, and isprintable() is one C pass that stops
    # at the first such character: most texts never reach the regex.
    if text.isprintable() or not _CONTROL.search(text):
        return text
    return _CONTROL.sub("", text)


def _whitespace_work(text: str) -> bool:
    """False only if normalize_whitespace would return ``text`` unchanged (substring tests run in C).

    A change needs a space run, a space at a line's or the text's end, three newlines in a row, or
    whitespace other than a space or newline; all whitespace but the space is non-printable.
    """
    if not text:
        return False
    if text[0].isspace() or text[-1].isspace() or "  " in text:
        return True
    if text.isprintable():
        return False
    return " \n" in text or "\n " in text or "\n\n\n" in text or _ODD_SPACE.search(text) is not None


def normalize_whitespace(text: str) -> str:
    """One space between words, Unix newlines, at most one blank line, no spaces at line ends."""
    if not _whitespace_work(text):
        return text
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _SPACES.sub(" ", text)
    if "\n" in text:
        text = "\n".join(line.strip() for line in text.split("\n"))
        text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


def unicode_nfc(text: str) -> str:
    """Unicode NFC: composed characters ('i' + U+0307 and the like become one code point where one exists)."""
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


class TextCleaner:
    """Applies the recipe's cleaning steps in a fixed order and records which ones changed a text."""

    def __init__(self, cfg: CleanConfig) -> None:
        self.cfg = cfg
        steps = [
            ("fix_mojibake", cfg.fix_mojibake, fix_mojibake),
            ("strip_html", cfg.strip_html, strip_html),
            ("unicode_nfc", cfg.unicode_nfc, unicode_nfc),
            ("strip_control", cfg.strip_control, strip_control),
            ("normalize_whitespace", cfg.normalize_whitespace, normalize_whitespace),
        ]
        self.steps = [(name, fn) for name, on, fn in steps if on]
        self.step_names = tuple(name for name, _ in self.steps) + (("lowercase",) if cfg.lowercase else ())

    def __call__(self, text: str, lang: str | None, changed: set[str]) -> str:
        """The cleaned text; names of the steps that changed it are added to ``changed``."""
        for name, step in self.steps:
            new = step(text)
            if new != text:
                changed.add(name)
                text = new
        if self.cfg.lowercase:
            new = lower_text(text, lang or self.cfg.language)
            if new != text:
                changed.add("lowercase")
                text = new
        return text
