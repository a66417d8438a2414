"""Exact and near-duplicate detection: golden cases, and recall/precision on generated pairs."""

from __future__ import annotations

import random

from ayar.data.dedup import Deduplicator, normalize_for_dedup, shingles
from ayar.recipe import DedupConfig


def test_exact_duplicates_after_normalization() -> None:
    dedup = Deduplicator(DedupConfig(near=False))
    assert dedup.check(["Kelimeyi tersten yaz.", "kitap", "patik"], "tr") is None
    assert dedup.check(["KELİMEYİ  tersten yaz.", "KİTAP", "patik"], "tr") == "exact_duplicate"
    assert dedup.check(["Kelimeyi tersten yaz.", "kitap", "patik!"], "tr") is None


def test_field_boundaries_matter() -> None:
    dedup = Deduplicator(DedupConfig(near=False))
    assert dedup.check(["ab", "c"]) is None
    assert dedup.check(["a", "bc"]) is None


def test_records_that_differ_in_their_answer_are_kept() -> None:
    dedup = Deduplicator(DedupConfig())
    kept = [dedup.check(["İki sayıyı topla.", f"{a} + {b}", str(a + b)], "tr") for a in range(10, 30) for b in (35, 36)]
    assert kept == [None] * 40
    for day in range(1, 29):  # dates one day apart
        assert dedup.check(["Write the date in words.", f"2020-05-{day:02d}", f"May {day}, 2020"], "en") is None


def test_first_of_a_cluster_is_kept() -> None:
    base = " ".join(f"kelime{i}" for i in range(60))
    dedup = Deduplicator(DedupConfig())
    assert dedup.check([base, "", "cevap"]) is None
    assert dedup.check([base.replace("kelime30", "değişik"), "", "cevap"]) == "near_duplicate"
    assert dedup.check([base.replace("kelime40", "başka"), "", "cevap"]) == "near_duplicate"


def _shingle_set(doc: str) -> set[str]:
    return set(shingles(normalize_for_dedup([doc], None), "word", 3))


def test_near_dup_recall_and_precision_on_generated_pairs() -> None:
    rng = random.Random(0)
    vocab = [f"w{i}" for i in range(3000)]
    docs: list[str] = []
    for _ in range(150):
        words = [rng.choice(vocab) for _ in range(80)]
        docs.append(" ".join(words))
        near = list(words)
        for _ in range(rng.choice([1, 2])):  # 1-2 edited words: Jaccard about 0.86-0.93
            near[rng.randrange(len(near))] = rng.choice(vocab)
        docs.append(" ".join(near))
        half = words[:40] + [rng.choice(vocab) for _ in range(40)]  # a hard negative: Jaccard about 0.3
        docs.append(" ".join(half))
    dedup = Deduplicator(DedupConfig(threshold=0.8))
    kept: list[set[str]] = []
    true_pos = false_pos = false_neg = 0
    for doc in docs:
        grams = _shingle_set(doc)
        truth = any(len(grams & k) / len(grams | k) >= 0.8 for k in kept)  # the exact Jaccard similarity
        said = dedup.check([doc]) == "near_duplicate"
        true_pos += truth and said
        false_pos += said and not truth
        false_neg += truth and not said
        if not said:
            kept.append(grams)
    recall = true_pos / (true_pos + false_neg)
    precision = true_pos / (true_pos + false_pos)
    print(f"near-dup recall {recall:.3f} precision {precision:.3f} ({true_pos} true pairs found)")
    assert true_pos > 100
    assert recall >= 0.95, recall
    assert precision >= 0.95, precision


def test_near_dup_off_keeps_near_copies() -> None:
    base = " ".join(f"kelime{i}" for i in range(60))
    dedup = Deduplicator(DedupConfig(near=False))
    assert dedup.check([base]) is None
    assert dedup.check([base.replace("kelime30", "değişik")]) is None


def test_char_shingles() -> None:
    dedup = Deduplicator(DedupConfig(shingle="char", ngram=5, threshold=0.7))
    assert dedup.check(["merhabalar dünya, bugün hava çok güzel ve güneşli"]) is None
    assert dedup.check(["merhabalar dünya, bugün hava çok güzel ve güneşliydi"]) == "near_duplicate"
