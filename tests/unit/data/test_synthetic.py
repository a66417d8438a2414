"""The seeded generator's Turkish tasks: correct by the rules, and enough distinct records to survive dedup."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ayar.data.prepare import prepare
from ayar.data.synthetic import (
    TR_NOUNS,
    english_number_words,
    generate_records,
    turkish_number_words,
    turkish_suffix,
)
from ayar.recipe import DataConfig, load_recipe

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(("number", "turkish", "english"), [
    (0, "sıfır", "zero"), (7, "yedi", "seven"), (10, "on", "ten"), (15, "on beş", "fifteen"),
    (40, "kırk", "forty"), (99, "doksan dokuz", "ninety-nine"), (100, "yüz", "one hundred"),
    (101, "yüz bir", "one hundred one"), (347, "üç yüz kırk yedi", "three hundred forty-seven"),
    (1000, "bin", "one thousand"), (1984, "bin dokuz yüz seksen dört", "one thousand nine hundred eighty-four"),
    (2026, "iki bin yirmi altı", "two thousand twenty-six"),
])
def test_number_words(number: int, turkish: str, english: str) -> None:
    assert turkish_number_words(number) == turkish and english_number_words(number) == english


@pytest.mark.parametrize(("word", "plural", "locative", "ablative"), [
    ("kitap", "kitaplar", "kitapta", "kitaptan"),  # back vowel, hardening after p
    ("ev", "evler", "evde", "evden"),  # front vowel
    ("göz", "gözler", "gözde", "gözden"),  # rounded front vowel
    ("su", "sular", "suda", "sudan"),  # ends in a vowel
    ("ağaç", "ağaçlar", "ağaçta", "ağaçtan"),
    ("otobüs", "otobüsler", "otobüste", "otobüsten"),
])
def test_suffixes_follow_vowel_harmony_and_hardening(word: str, plural: str, locative: str, ablative: str) -> None:
    assert [turkish_suffix(word, c) for c in ("plural", "locative", "ablative")] == [plural, locative, ablative]


def test_new_tasks_are_seeded_distinct_and_in_both_languages() -> None:
    tasks = ["number_words", "plural", "locative", "ablative"]
    records = list(generate_records(400, 3, ["tr", "en"], tasks))
    assert records == list(generate_records(400, 3, ["tr", "en"], tasks))
    assert len({(r["instruction"], r["input"]) for r in records}) == 400
    assert {(r["task"], r["lang"]) for r in records} == {(t, lang) for t in tasks for lang in ("tr", "en")}
    for r in records:
        if r["task"] == "number_words":
            words = turkish_number_words if r["lang"] == "tr" else english_number_words
            assert r["output"] == words(int(r["input"]))
        else:
            assert r["input"] in TR_NOUNS and r["output"].startswith(r["input"])


def test_quickstart_mix_keeps_every_task_after_dedup(tmp_path: Path) -> None:
    """Dedup must not empty a task: each keeps most of its records and a real share of the test split.

    Short records that share a long instruction look alike to word-shingle MinHash; month loses the most
    (about a third), so the bar is half.
    """
    synthetic = load_recipe(ROOT / "recipes/quickstart.yaml").data.synthetic
    prepared = prepare(DataConfig(synthetic=synthetic, save_arrow=False), tmp_path / "out", seed=42)
    generated = Counter(r["task"] for r in generate_records(synthetic.num_records, 42, synthetic.languages,
                                                            synthetic.tasks))
    kept = Counter(r["task"] for split in ("train", "validation", "test") for r in prepared.read_split(split))
    test = Counter(r["task"] for r in prepared.read_split("test"))
    for task in synthetic.tasks:
        assert kept[task] >= 0.5 * generated[task], (task, kept[task], generated[task])
        assert test[task] >= 20, (task, test)
