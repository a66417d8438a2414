"""Exact and near-duplicate removal: a hash of the normalized text, then MinHash LSH (datasketch).

The first record of each cluster is kept (input order, so the choice is deterministic). What is
hashed is every text of a record (for alpaca: instruction, input and output), so records that
ask the same but answer differently ('12 + 35' → 47 vs '12 + 36' → 48) are different records.
LSH candidates are confirmed with the signatures' estimated Jaccard similarity, which keeps
LSH's chance collisions out.

Signatures are datasketch's (``MinHash(num_perm, seed=1, hashfunc=xxh32)``, scheme affine32), but
computed for many records at once: datasketch's ``update_batch`` and ``MinHash.bulk`` run one record
per numpy call, which at ~60 shingles a record is mostly call overhead. A test checks the batched
signatures against ``MinHash.update_batch`` bit for bit.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np
import xxhash
from datasketch import MinHash, MinHashLSH

from ayar.data.clean import lower_text
from ayar.recipe import DedupConfig

FIELD_SEPARATOR = " \x1f "  # keeps ("ab", "c") apart from ("a", "bc")
MINHASH_SEED = 1
MINHASH_SCHEME = "affine32"
LSH_WEIGHTS = (0.05, 0.95)  # (false positive, false negative) weights for choosing bands and rows
BATCH_RECORDS = 16  # records per numpy block when signing: (128, ~1000 shingles) uint32 stays in cache
_HASH_SHINGLE = xxhash.xxh32_intdigest  # faster than datasketch's default sha1 (docs/data.md, step 8)
_FMIX32 = (np.uint32(16), np.uint32(0x85EBCA6B), np.uint32(13), np.uint32(0xC2B2AE35))
_FMIX64 = (np.uint64(33), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))


def normalize_for_dedup(texts: list[str], lang: str | None) -> str:
    """Lower-cased (language-aware), whitespace-collapsed text of all fields, joined."""
    return FIELD_SEPARATOR.join(" ".join(lower_text(t, lang).split()) for t in texts)


def normalize_words(field_words: list[list[str]], lang: str | None) -> str:
    """:func:`normalize_for_dedup` from each field's ``str.split()`` words, lower-cased in one call.

    The same text: lower-casing neither makes nor removes whitespace, and its only context rule
    (final sigma) stops at whitespace, so casing the joined words equals casing each field.
    """
    return lower_text(FIELD_SEPARATOR.join(map(" ".join, field_words)), lang)


def exact_key(normalized: str) -> int:
    """A 64-bit hash of the normalized text (collisions at 1M records: about 3e-8)."""
    return xxhash.xxh3_64_intdigest(normalized.encode("utf-8"))


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


def shingle_hashes(normalized: str, kind: str, n: int) -> list[int]:
    """The 32-bit hash of every shingle of :func:`shingles`, repeats included (a minimum ignores them).

    ``normalized`` is :func:`normalize_for_dedup`'s output (or :func:`normalize_words`').
    """
    if kind == "char":
        if len(normalized) <= n:
            return [_HASH_SHINGLE(normalized.encode("utf-8"))]
        grams = [normalized[i:i + n] for i in range(len(normalized) - n + 1)]
        return list(map(_HASH_SHINGLE, map(str.encode, grams)))
    # Words as UTF-8 bytes, split once: the same words as normalized.split(), whose only whitespace is
    # " " and the field separator's "\x1f" (bytes.split() knows ASCII whitespace but not "\x1f").
    words = normalized.encode("utf-8").replace(b"\x1f", b" ").split()
    if len(words) <= n:
        return [_HASH_SHINGLE(b" ".join(words))]
    return list(map(_HASH_SHINGLE, map(b" ".join, zip(*(words[i:] for i in range(n)), strict=False))))


@lru_cache(maxsize=4)
def _permutations(num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's own permutation parameters (a, b), as columns."""
    a, b = MinHash(num_perm=num_perm, seed=MINHASH_SEED, hashfunc=_HASH_SHINGLE, scheme=MINHASH_SCHEME).permutations
    return a.astype(np.uint32)[:, None], b.astype(np.uint32)[:, None]


def _fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's finalizer, which datasketch's affine32 scheme applies to every shingle hash."""
    s1, m1, s2, m2 = _FMIX32
    h = h ^ (h >> s1)
    h *= m1
    h ^= h >> s2
    h *= m2
    return h ^ (h >> s1)


def minhash_signatures(hash_lists: Sequence[list[int]], num_perm: int) -> np.ndarray:
    """MinHash signatures (uint32, one row per record) of records given as shingle hashes.

    The same values as datasketch's ``MinHash.update_batch``: min over shingles of
    ``a * fmix32(h) + b`` in uint32 arithmetic, per permutation.
    """
    a, b = _permutations(num_perm)
    out = np.empty((num_perm, len(hash_lists)), dtype=np.uint32)
    for first in range(0, len(hash_lists), BATCH_RECORDS):
        block = hash_lists[first:first + BATCH_RECORDS]
        lengths = np.fromiter(map(len, block), dtype=np.int64, count=len(block))
        starts = np.zeros(len(block), dtype=np.int64)
        np.cumsum(lengths[:-1], out=starts[1:])
        flat = np.fromiter((h for hashes in block for h in hashes), dtype=np.uint32, count=int(lengths.sum()))
        permuted = _fmix32(flat)[None, :] * a
        permuted += b
        out[:, first:first + len(block)] = np.minimum.reduceat(permuted, starts, axis=1)
    return np.ascontiguousarray(out.T)


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """One 64-bit key per LSH band and record (bands of ``rows`` consecutive values), shape (records, bands).

    Each band's values, two to a 64-bit word, are chained through MurmurHash3's 64-bit finalizer
    (a bijection), so equal bands give equal keys and unequal ones collide about once in 2**64;
    candidates are verified against the signatures anyway.
    """
    values = signatures[:, : bands * rows].reshape(len(signatures), bands, rows).astype(np.uint64)
    if rows % 2:
        values = np.concatenate([values, np.zeros((*values.shape[:2], 1), dtype=np.uint64)], axis=2)
    words = (values[:, :, 0::2] << np.uint64(32)) | values[:, :, 1::2]
    shift, m1, m2 = _FMIX64
    key = np.zeros(words.shape[:2], dtype=np.uint64)
    for column in range(words.shape[2]):
        key ^= words[:, :, column]
        key ^= key >> shift
        key *= m1
        key ^= key >> shift
        key *= m2
        key ^= key >> shift
    return key


class Deduplicator:
    """Remembers the kept records and says whether a new one duplicates one of them.

    Signatures come from datasketch's MinHash and the bands and rows from its MinHashLSH; the band
    index itself is a dict per band holding only ints, because datasketch's dict storage keeps a
    set and a list of byte strings per record, which at a million records would not fit the 4 GB
    budget (the figures per record are in docs/data.md, step 8).

    Keys (:meth:`keys`, :meth:`sign`) need no state and can be made in worker processes, in
    batches; :meth:`admit` must see the records one by one in input order.
    """

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self.seen: set[int] = set()
        self._kept = 0
        self._signatures = np.empty((1024 if cfg.near else 0, cfg.num_perm), dtype=np.uint32)
        self._tables: list[dict[int, int | list[int]]] = []
        self.bands = self.rows = 0
        if cfg.near:
            # datasketch's default weights balance false positives and negatives, finding only ~40% of
            # pairs right at the threshold; candidates are verified, so trade false positives for recall.
            lsh = MinHashLSH(threshold=cfg.threshold, num_perm=cfg.num_perm, weights=LSH_WEIGHTS)
            self.bands, self.rows = lsh.b, lsh.r
            self._tables = [{} for _ in range(lsh.b)]

    def keys(self, texts: list[str], lang: str | None, normalized: str | None = None) -> tuple[int, list[int] | None]:
        """The exact key and (when near-dup is on) the shingle hashes of a record's texts.

        ``normalized`` is :func:`normalize_for_dedup` of the texts, when the caller has it already.
        """
        if normalized is None:
            normalized = normalize_for_dedup(texts, lang)
        hashes = shingle_hashes(normalized, self.cfg.shingle, self.cfg.ngram) if self.cfg.near else None
        return exact_key(normalized), hashes

    def sign(self, hash_lists: Sequence[list[int]]) -> tuple[np.ndarray, list[list[int]]]:
        """Signatures (one row per record) and LSH band keys (a list of ints per record) of shingle hashes."""
        signatures = minhash_signatures(hash_lists, self.cfg.num_perm)
        return signatures, band_keys(signatures, self.bands, self.rows).tolist()

    def admit(self, key: int, signature: np.ndarray | None = None, bands: list[int] | None = None) -> str | None:
        """'exact_duplicate', 'near_duplicate', or None (then the record is remembered as kept)."""
        if self.cfg.exact and key in self.seen:
            return "exact_duplicate"
        if signature is not None and self._tables:
            if bands is None:
                bands = band_keys(signature[None, :], self.bands, self.rows)[0].tolist()
            found = list(map(dict.get, self._tables, bands))  # a bucket: None, one index, or a list
            if found.count(None) < len(found):
                candidates: set[int] = set()
                for bucket in found:
                    if type(bucket) is list:
                        candidates.update(bucket)
                    elif bucket is not None:
                        candidates.add(bucket)
                rows = self._signatures[sorted(candidates)]
                agree = np.count_nonzero(rows == signature, axis=1).max() / self.cfg.num_perm
                if agree >= self.cfg.threshold:
                    return "near_duplicate"
            index = self._store(signature)
            for table, band, bucket in zip(self._tables, bands, found, strict=True):
                if bucket is None:
                    table[band] = index
                elif type(bucket) is list:
                    bucket.append(index)
                else:
                    table[band] = [bucket, index]
        if self.cfg.exact:
            self.seen.add(key)
        return None

    def check(self, texts: list[str], lang: str | None = None) -> str | None:
        """Keys and admission in one call (for callers without worker processes)."""
        key, hashes = self.keys(texts, lang)
        if hashes is None:
            return self.admit(key)
        signatures, bands = self.sign([hashes])
        return self.admit(key, signatures[0], bands[0])

    def _store(self, signature: np.ndarray) -> int:
        if self._kept == len(self._signatures):
            grown = np.empty((2 * len(self._signatures), self.cfg.num_perm), dtype=np.uint32)
            grown[: self._kept] = self._signatures
            self._signatures = grown
        self._signatures[self._kept] = signature
        self._kept += 1
        return self._kept - 1
