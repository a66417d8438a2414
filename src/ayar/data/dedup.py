"""Exact and near-duplicate removal: a hash of the normalized text, then MinHash LSH (datasketch).

The first record of each cluster is kept (input order, so the choice is deterministic). What is
hashed is every text of a record (for alpaca: instruction, input and output), so records that
ask the same but answer differently ('12 + 35' → 47 vs '12 + 36' → 48) are different records.
LSH candidates are confirmed with the signatures' estimated Jaccard similarity, which keeps
LSH's chance collisions out.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH

from ayar.data.clean import lower_text
from ayar.recipe import DedupConfig

FIELD_SEPARATOR = " \x1f "  # keeps ("ab", "c") apart from ("a", "bc")
MINHASH_SEED = 1
LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative) weights for choosing bands and rows


def normalize_for_dedup(texts: list[str], lang: str | None) -> str:
    """Lower-cased (language-aware), whitespace-collapsed text of all fields, joined."""
    return FIELD_SEPARATOR.join(" ".join(lower_text(t, lang).split()) for t in texts)


def exact_key(normalized: str) -> int:
    """A 64-bit hash of the normalized text (collisions at 1M records: about 3e-8)."""
    return int.from_bytes(hashlib.blake2b(normalized.encode("utf-8"), digest_size=8).digest(), "little")


def shingles(normalized: str, kind: str, n: int) -> list[str]:
    """Word or character n-grams of a text; a text shorter than n is one shingle."""
    if kind == "char":
        if len(normalized) <= n:
            return [normalized]
        return list({normalized[i:i + n] for i in range(len(normalized) - n + 1)})
    words = normalized.split()
    if len(words) <= n:
        return [" ".join(words)]
    return list({" ".join(gram) for gram in zip(*(words[i:] for i in range(n)), strict=False)})


@lru_cache(maxsize=4)
def _sketch(num_perm: int) -> MinHash:
    # xxh32 hashes shingles ~2x faster than datasketch's default sha1; one sketch is reused per process.
    return MinHash(num_perm=num_perm, seed=MINHASH_SEED, hashfunc=xxhash.xxh32_intdigest)


def minhash_signature(grams: list[str], num_perm: int) -> np.ndarray:
    """The MinHash signature (uint32, one value per permutation) of a set of shingles."""
    sketch = _sketch(num_perm)
    sketch.clear()
    sketch.update_batch([gram.encode("utf-8") for gram in grams])
    return sketch.hashvalues


class Deduplicator:
    """Remembers the kept records and says whether a new one duplicates one of them.

    Signatures come from datasketch's MinHash and the bands and rows from its MinHashLSH; the band
    index itself is a dict per band holding only ints, because datasketch's dict storage keeps a
    set and a list of byte strings per record (~5 KB each, measured), which at a million records
    would not fit the 4 GB budget. Here a kept record costs ~1.2 KB plus its signature.
    """

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self.seen: set[int] = set()
        self._kept = 0
        self._signatures = np.empty((1024 if cfg.near else 0, cfg.num_perm), dtype=np.uint32)
        self._tables: list[dict[int, int | list[int]]] = []
        self._ranges: list[tuple[int, int]] = []
        if cfg.near:
            # datasketch's default weights balance false positives and negatives, finding only ~40% of
            # pairs right at the threshold; candidates are verified, so trade false positives for recall.
            lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=LSH_WEIGHTS)
            self._ranges = [(i * lsh.r, (i + 1) * lsh.r) for i in range(lsh.b)]
            self._tables = [{} for _ in range(lsh.b)]

    def keys(self, texts: list[str], lang: str | None) -> tuple[int, np.ndarray | None]:
        """The exact key and (when near-dup is on) MinHash signature of a record's texts."""
        normalized = normalize_for_dedup(texts, lang)
        signature = None
        if self.cfg.near:
            signature = minhash_signature(shingles(normalized, self.cfg.shingle, self.cfg.ngram), self.cfg.num_perm)
        return exact_key(normalized), signature

    def admit(self, key: int, signature: np.ndarray | None) -> str | None:
        """'exact_duplicate', 'near_duplicate', or None (then the record is remembered as kept)."""
        if self.cfg.exact and key in self.seen:
            return "exact_duplicate"
        if signature is not None and self._tables:
            # Python's bytes hash is per process, which is fine: the index lives in one process only.
            bands = [hash(signature[start:end].tobytes()) for start, end in self._ranges]
            candidates: set[int] = set()
            for table, band in zip(self._tables, bands, strict=True):
                found = table.get(band)
                if isinstance(found, list):
                    candidates.update(found)
                elif found is not None:
                    candidates.add(found)
            if candidates:
                rows = self._signatures[sorted(candidates)]
                agree = np.count_nonzero(rows == signature, axis=1).max() / self.cfg.num_perm
                if agree >= self.cfg.threshold:
                    return "near_duplicate"
            index = self._store(signature)
            for table, band in zip(self._tables, bands, strict=True):
                found = table.get(band)
                if found is None:
                    table[band] = index
                elif isinstance(found, list):
                    found.append(index)
                else:
                    table[band] = [found, index]
        if self.cfg.exact:
            self.seen.add(key)
        return None

    def check(self, texts: list[str], lang: str | None = None) -> str | None:
        """Keys and admission in one call (for callers without worker processes)."""
        return self.admit(*self.keys(texts, lang))

    def _store(self, signature: np.ndarray) -> int:
        if self._kept == len(self._signatures):
            grown = np.empty((2 * len(self._signatures), self.cfg.num_perm), dtype=np.uint32)
            grown[: self._kept] = self._signatures
            self._signatures = grown
        self._signatures[self._kept] = signature
        self._kept += 1
        return self._kept - 1
