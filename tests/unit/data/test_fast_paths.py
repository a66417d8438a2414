"""Every shortcut of the prepare pipeline gives what the plain computation gives, on generated text.

The shortcuts (prechecks before regexes, a shared word split, batched MinHash, band keys) exist
for speed only; each test here pits one against the straightforward version it replaces.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import xxhash
from datasketch import MinHash
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ayar.data.clean import normalize_whitespace, strip_control
from ayar.data.dedup import (
    MINHASH_SEED,
    band_keys,
    minhash_signatures,
    normalize_for_dedup,
    normalize_words,
    shingle_hashes,
    shingles,
)
from ayar.data.pii import _DETECTORS, PII_TYPES, find_pii
from ayar.data.quality import _ngram_ratio_bound, repeated_ngram_ratio, symbol_ratio


def fuzz(examples: int) -> Any:
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))


SPACES = " \n\t\r\x0b\x0c\x1c\x1f\x85\xa0\u2000\u2028\u202f\u3000"
TRICKY = SPACES + "ab_.,!?-–“”€ΣσςİIıişŞçÇ0١٢٣０@:\x00\x07\x7f\x9f\u200b\ufeff"
TEXT = st.one_of(st.text(max_size=60), st.text(alphabet=TRICKY, max_size=60))
PII_PIECES = ["ali@example.com", "0532 123 45 67", "+90 (532) 123-45-67", "+44 20 7946 0958",
              "TR33 0006 1005 1978 6457 8413 26", "4111 1111 1111 1111", "10000000146", "192.168.1.1",
              "fe80::1ff:fe23:4567:890a", "::2", "12:30", "١٢٣٤٥٦٧٨٩٠١", "٤١١١ ١١١١ ١١١١ ١١١١", "０５３２ １２３ ４５ ６７", "x@y"]
PII_TEXT = st.lists(st.one_of(st.sampled_from(PII_PIECES), st.text(alphabet=TRICKY, max_size=8)),
                    max_size=6).map(" ".join)


def _normalize_whitespace_plain(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[^\S\n]+", " ", text)
    if "\n" in text:
        text = "\n".join(line.strip() for line in text.split("\n"))
        text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


@fuzz(1500)
@given(text=TEXT)
@example(text="a \nb")
@example(text="a\n\n\nb")
def test_whitespace_and_control_prechecks(text: str) -> None:
    assert normalize_whitespace(text) == _normalize_whitespace_plain(text)
    assert strip_control(text) == re.sub("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u200b\ufeff]", "", text)


@fuzz(1500)
@given(text=TEXT)
def test_symbol_ratio_counts_what_a_full_scan_counts(text: str) -> None:
    compact = "".join(text.split())
    symbols = len(re.findall(r"[^\w]|_", compact))
    alnum = len(compact) - symbols
    assert symbol_ratio(text) == (symbols / alnum if alnum else float(symbols))


@fuzz(1000)
@given(words=st.lists(st.sampled_from(["a", "b", "c", "d", "e"]) | st.text(min_size=1, max_size=3).filter(
    lambda w: w == "".join(w.split())), max_size=30), n=st.integers(1, 4))
def test_ngram_bound_never_undercuts_the_ratio(words: list[str], n: int) -> None:
    assert _ngram_ratio_bound(words, n) >= repeated_ngram_ratio(" ".join(words), n)


@fuzz(1500)
@given(texts=st.lists(TEXT, min_size=1, max_size=3), lang=st.sampled_from([None, "tr", "en", "az"]))
@example(texts=["ΣΑΣ ΟΔΟΣ", "İI ıi"], lang="tr")
def test_normalize_words_equals_normalize_for_dedup(texts: list[str], lang: str | None) -> None:
    assert normalize_words([t.split() for t in texts], lang) == normalize_for_dedup(texts, lang)


@fuzz(500)
@given(texts=st.lists(TEXT, min_size=1, max_size=3), kind=st.sampled_from(["word", "char"]), n=st.integers(1, 5))
def test_shingle_hashes_hash_the_shingles(texts: list[str], kind: str, n: int) -> None:
    normalized = normalize_for_dedup(texts, None)
    expected = {xxhash.xxh32_intdigest(g.encode("utf-8")) for g in shingles(normalized, kind, n)}
    assert set(shingle_hashes(normalized, kind, n)) == expected


def test_batched_signatures_are_datasketch_signatures() -> None:
    rng = np.random.default_rng(0)
    for num_perm in (16, 128, 130):
        records = [list(rng.integers(0, 2**32, size=int(size), dtype=np.uint64))
                   for size in rng.integers(1, 400, size=70)]
        signatures = minhash_signatures([[int(h) for h in r] for r in records], num_perm)
        for hashes, signature in zip(records, signatures, strict=True):
            sketch = MinHash(num_perm=num_perm, seed=MINHASH_SEED, hashfunc=int)
            sketch.update_batch([int(h) for h in hashes])
            assert np.array_equal(sketch.hashvalues, signature)


def test_band_keys_match_exactly_when_bands_match() -> None:
    rng = np.random.default_rng(1)
    for bands, rows in ((16, 8), (21, 6), (9, 14), (10, 5)):
        signatures = rng.integers(0, 2**32, size=(300, bands * rows + 3), dtype=np.uint64).astype(np.uint32)
        signatures[1::2, : rows * 3] = signatures[0::2, : rows * 3]  # odd rows share their first three bands
        keys = band_keys(signatures, bands, rows)
        assert keys.shape == (300, bands)
        same = keys[1::2] == keys[0::2]
        assert same[:, :3].all() and not same[:, 3:].any()
        assert len(np.unique(keys[:, 3:])) == keys[:, 3:].size  # unequal bands: no collisions here


def _find_pii_plain(text: str) -> list[tuple[str, int, int]]:
    taken: list[tuple[int, int]] = []
    found = []
    for kind in PII_TYPES:
        for start, end in _DETECTORS[kind](text):
            if not any(start < t_end and t_start < end for t_start, t_end in taken):
                taken.append((start, end))
                found.append((kind, start, end))
    return sorted(found, key=lambda m: m[1])


@fuzz(1500)
@given(text=PII_TEXT)
def test_pii_guards_skip_only_detectors_that_cannot_fire(text: str) -> None:
    assert [(m.type, m.start, m.end) for m in find_pii(text)] == _find_pii_plain(text)
