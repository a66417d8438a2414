"""Golden tests for every cleaning rule and quality filter."""

from __future__ import annotations

import pytest

from ayar.data.clean import (
    TextCleaner,
    fix_mojibake,
    lower_text,
    normalize_whitespace,
    strip_control,
    strip_html,
    unicode_nfc,
)
from ayar.data.quality import QualityFilter, repeated_line_ratio, repeated_ngram_ratio, symbol_ratio
from ayar.recipe import CleanConfig, FilterConfig


def test_turkish_lowercase() -> None:
    assert lower_text("İSTANBUL IĞDIR", "tr") == "istanbul ığdır"
    assert lower_text("İSTANBUL IĞDIR", "tr-TR") == "istanbul ığdır"
    assert "İSTANBUL IĞDIR".lower() != "istanbul ığdır"  # the reason this helper exists


def test_english_lowercase() -> None:
    assert lower_text("ISTANBUL IS BIG", "en") == "istanbul is big"
    assert lower_text("IĞDIR", None) == "iğdir"
    assert lower_text("İzmir", "en") == "izmir"  # no combining dot left behind


def test_fix_mojibake() -> None:
    assert fix_mojibake("BaÅŸkent Ä°stanbul") == "Başkent İstanbul"
    assert fix_mojibake("Ã§ok gÃ¼zel") == "çok güzel"
    clean = "Çok güzel, ığdır, Şişli — “tırnak”"
    assert fix_mojibake(clean) == clean


def test_unicode_nfc() -> None:
    decomposed = "s\u0327eker"  # s + combining cedilla
    assert unicode_nfc(decomposed) == "şeker"
    assert len(unicode_nfc(decomposed)) == 5


def test_strip_control_keeps_tab_and_newline() -> None:
    assert strip_control("a\x00b\x07c\u200bd\ufeff\te\nf\x85") == "abcd\te\nf"


def test_normalize_whitespace() -> None:
    assert normalize_whitespace("  a \t b\u00a0c  \r\nd   \n\n\n\n e ") == "a b c\nd\n\ne"


def test_strip_html() -> None:
    html = "<p>Merhaba <b>dünya</b> &amp; herkes</p><script>alert(1)</script><style>p{}</style>"
    assert strip_html(html).strip() == "Merhaba dünya & herkes"
    assert strip_html("2 < 3 ve 5 > 4") == "2 < 3 ve 5 > 4"


def test_cleaner_reports_changed_steps_and_uses_record_language() -> None:
    cleaner = TextCleaner(CleanConfig(lowercase=True, language="en", strip_html=True))
    changed: set[str] = set()
    out = cleaner("<i>IĞDIR</i>  ve\x00 Ä°zmir", "tr", changed)
    assert out == "ığdır ve izmir"
    assert changed == {"fix_mojibake", "strip_html", "strip_control", "normalize_whitespace", "lowercase"}
    changed.clear()
    assert cleaner("IRMAK", None, changed) == "irmak"  # the recipe's language (en) when the record has none


def test_cleaner_steps_can_be_switched_off() -> None:
    cleaner = TextCleaner(CleanConfig(fix_mojibake=False, normalize_whitespace=False, strip_control=False))
    changed: set[str] = set()
    assert cleaner("Ä°  x\x00", None, changed) == "Ä°  x\x00"
    assert changed == set()


def test_repetition_and_symbol_measures() -> None:
    assert repeated_line_ratio("a\nb\na\na") == pytest.approx(0.5)
    assert repeated_line_ratio("tek satır") == 0.0
    assert repeated_ngram_ratio("a b c a b c a b c", 3) == pytest.approx(1 - 3 / 7)
    assert repeated_ngram_ratio("12 + 35", 3) == 0.0
    assert symbol_ratio("ab!!") == 1.0
    assert symbol_ratio("$$$") == 3.0


@pytest.mark.parametrize(
    ("text", "responses", "cfg", "reason"),
    [
        ("soru", [""], {}, "empty_response"),
        ("soru", [], {}, "empty_response"),
        ("kısa", ["x"], {"min_chars": 10}, "too_short"),
        ("x" * 20, ["x"], {"max_chars": 10}, "too_long"),
        ("aynı\naynı\naynı\naynı\nfarklı", ["a"], {}, "repeated_lines"),
        ("bir iki üç bir iki üç bir iki üç bir iki üç", ["a"], {}, "repeated_ngrams"),
        ("{}[]()<>!!?? ab", ["a"], {}, "symbol_ratio"),
        ("İki sayıyı topla.\n\n12 + 35\n\n47", ["47"], {}, None),
        ("bir metin", None, {}, None),
    ],
)
def test_quality_filter_reasons(text: str, responses: list[str] | None, cfg: dict, reason: str | None) -> None:
    assert QualityFilter(FilterConfig(**cfg)).reason(text, responses) == reason


def test_token_limits_use_the_given_counter() -> None:
    words = len  # a stand-in tokenizer: one token per character
    qf = QualityFilter(FilterConfig(min_tokens=5, max_tokens=8), count_tokens=words)
    assert qf.reason("abcd", ["a"]) == "too_few_tokens"
    assert qf.reason("abcdefghij", ["a"]) == "too_many_tokens"
    assert qf.reason("abcdef", ["a"]) is None
