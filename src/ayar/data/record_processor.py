"""The prepare stage's per-record work, run in worker processes on chunks of records.

Each item is parsed, shape-checked, sampled, consent-checked, cleaned, redacted and quality-filtered
here, and the records that go on to dedup get their keys and MinHash signatures. The main process
(:mod:`ayar.data.prepare`) gets the results back in input order and keeps the serial parts: the
accounting and the dedup index.
"""

from __future__ import annotations

import json
import multiprocessing
from collections import Counter, deque
from collections.abc import Iterator
from itertools import islice
from typing import Any, NamedTuple

import numpy as np
import xxhash

from ayar.data.clean import TextCleaner
from ayar.data.consent import ConsentFilter
from ayar.data.dedup import Deduplicator, normalize_words
from ayar.data.load import Reject, to_record
from ayar.data.pii import redact_pii, redact_pii_into
from ayar.data.quality import QualityFilter
from ayar.data.shapes import map_texts, prose_texts, record_texts, response_texts
from ayar.errors import UsageError
from ayar.recipe import DataConfig

CHUNK = 1000  # records per task sent to a worker process
IN_FLIGHT = 3  # chunks queued per worker: enough to keep workers busy, few enough to bound memory
MAX_CHARS = 2**32 - 1  # the data card keeps lengths as uint32

REJECT = "__reject__"


class Result(NamedTuple):
    """What a worker sends back for one item; ``payload`` is UTF-8 JSON (records are serialized once)."""

    reason: str | None  # a removal reason, REJECT, or None for a record to dedup and keep
    payload: bytes  # the record (cleaned, redacted), the reject row, or only the id for consent/sampling
    changed: tuple[str, ...] = ()
    pii: dict[str, int] | None = None
    key: int = 0
    prompt_chars: int = 0
    response_chars: int = 0
    stratum: Any = None
    group: Any = None


class Chunk(NamedTuple):
    """A worker's answer for a chunk: its results, and a signature row and band keys per result to dedup.

    Results travel as plain tuples: a NamedTuple unpickles ten times slower, in the main process.
    """

    results: list[tuple]
    signatures: np.ndarray | None = None
    bands: list[list[int]] | None = None


class RecordProcessor:
    """Parsing, shape check, sampling, consent, cleaning, PII and quality for one item, plus dedup keys."""

    def __init__(self, cfg: DataConfig, sources: list[dict[str, Any]], seed: int, tokenizer: str | None) -> None:
        self.cfg = cfg
        self.sources = sources
        self.seed = seed
        self.consent = ConsentFilter(cfg.consent)
        self.cleaner = TextCleaner(cfg.clean)
        self.dedup = Deduplicator(cfg.dedup.model_copy(update={"exact": False}))  # keys() only; admit is serial
        self.pii_types = tuple(cfg.pii.types) if cfg.pii.enabled else ()
        self.stratify_by = stratify_field(cfg)
        count_tokens = None
        if cfg.filters.min_tokens > 0 or cfg.filters.max_tokens is not None:
            if not tokenizer:
                raise UsageError("data.filters.min_tokens/max_tokens need a tokenizer: set data.tokenizer")
            tok = load_tokenizer(tokenizer)
            count_tokens = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        self.quality = QualityFilter(cfg.filters, count_tokens)
        # Long texts are split into windows later: only limits the recipe sets itself drop a whole document.
        unset = {"max_chars": 2**62, "max_tokens": None}
        self.text_quality = QualityFilter(cfg.filters.model_copy(
            update={k: v for k, v in unset.items() if k not in cfg.filters.model_fields_set}), count_tokens) \
            if cfg.long_text.split else self.quality

    def sampled_out(self, src: int, line: int) -> bool:
        """A weight below 1 keeps that share of a source; the draw depends only on seed, source and line."""
        weight = self.sources[src]["weight"]
        return weight < 1.0 and xxhash.xxh64_intdigest(f"{self.seed}-{src}-{line}".encode()) / 2**64 >= weight

    def _in_step_order(self, changed: set[str]) -> tuple[str, ...]:
        """The cleaning steps that changed a record, in pipeline order (a set's order varies per process)."""
        return tuple(name for name in self.cleaner.step_names if name in changed) if changed else ()

    def process(self, chunk: list[tuple[int, int, Any]]) -> Chunk:
        """Every item of a chunk, then the MinHash signatures of the records to dedup, all at once."""
        results: list[Result] = []
        hash_lists: list[list[int]] = []
        for src, line, item in chunk:
            result, hashes = self(src, line, item)
            results.append(tuple(result))
            if hashes is not None:
                hash_lists.append(hashes)
        if not hash_lists:
            return Chunk(results)
        return Chunk(results, *self.dedup.sign(hash_lists))

    def __call__(self, src: int, line: int, item: Any) -> tuple[Result, list[int] | None]:
        """The result for one item, and its shingle hashes when it goes on to near-dup removal."""
        source = self.sources[src]
        record = to_record(item, source["format"], source["columns"], source["path"], line)
        if isinstance(record, Reject):
            row = record.to_dict()
            row["raw"] = redact_pii(row["raw"])[0]
            return Result(REJECT, encode_json(row)), None
        reason = "sampled_out" if self.sampled_out(src, line) else self.consent.reason(record)
        if reason:
            return Result(reason, encode_json(record.get(self.cfg.consent.id_field))), None
        fmt = source["format"]
        lang = record.get("lang") if isinstance(record.get("lang"), str) else None
        changed: set[str] = set()
        map_texts(record, fmt, lambda text: self.cleaner(text, lang, changed))
        pii: Counter = Counter()
        if self.pii_types:
            map_texts(record, fmt, lambda text: redact_pii_into(text, self.pii_types, pii))
        texts = record_texts(record, fmt)
        field_words = [text.split() for text in texts]
        responses = response_texts(record, fmt)
        # "\n".join(texts).split() is the fields' words one after another: split once, use twice.
        quality = self.text_quality if fmt == "text" else self.quality
        prose = prose_texts(record, fmt)  # tool calls and outputs are judged by their values, not their JSON
        reason = quality.reason("\n".join(texts), responses, [w for words in field_words for w in words]) \
            if prose is None else quality.reason("\n".join(prose), responses)
        changed_steps = self._in_step_order(changed)
        pii_counts = dict(pii) if pii else None
        if reason:
            return Result(reason, encode_json(record), changed_steps, pii_counts), None
        normalized = normalize_words(field_words, lang or self.cfg.clean.language)
        key, hashes = self.dedup.keys(texts, None, normalized)
        response_chars = sum(map(len, responses)) if responses else 0
        prompt_chars = sum(map(len, texts)) - response_chars
        group = record.get(self.cfg.split.group_by) if self.cfg.split.group_by else None
        stratum = record.get(self.stratify_by) if self.stratify_by else None
        return Result(None, encode_json(record), changed_steps, pii_counts, key, min(prompt_chars, MAX_CHARS),
                      min(response_chars, MAX_CHARS), stratum, group), hashes


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)  # json.dumps with options builds one per call


def dump_json(value: Any) -> str:
    return _ENCODER.encode(value)


def encode_json(value: Any) -> bytes:
    """UTF-8 JSON, made in the worker so that the main process only copies bytes."""
    return _ENCODER.encode(value).encode("utf-8")


def stratify_field(cfg: DataConfig) -> str | None:
    return cfg.split.stratify_by or ("label" if cfg.format == "classification" else None)


_WORKER: RecordProcessor | None = None


def _init_worker(*args: Any) -> None:
    global _WORKER
    _WORKER = RecordProcessor(*args)


def _process_chunk(chunk: list[tuple[int, int, Any]]) -> Chunk:
    assert _WORKER is not None
    return _WORKER.process(chunk)


def load_tokenizer(name: str) -> Any:
    """The target model's tokenizer (``data.tokenizer``); one that cannot be loaded is a usage error."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UsageError(f"data.tokenizer '{name}' could not be loaded: {exc}") from None


def processed_records(cfg: DataConfig, stream: Iterator[tuple[int, int, Any]], init: tuple) -> Iterator[tuple]:
    """(source, line, Result, signature, band keys) in input order, chunk by chunk; with num_proc > 1
    the chunks are spread over processes. Signature and band keys are None unless the record goes on
    to near-dup removal."""
    if cfg.num_proc == 1:
        processor = RecordProcessor(*init)
        while chunk := list(islice(stream, CHUNK)):
            yield from _unpack(chunk, processor.process(chunk))
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(cfg.num_proc, initializer=_init_worker, initargs=init) as pool:
        pending: deque = deque()
        while True:  # a bounded number of chunks in flight keeps memory flat on any input size
            while len(pending) < IN_FLIGHT * cfg.num_proc:
                chunk = list(islice(stream, CHUNK))
                if not chunk:
                    break
                pending.append((chunk, pool.apply_async(_process_chunk, (chunk,))))
            if not pending:
                return
            chunk, future = pending.popleft()
            yield from _unpack(chunk, future.get())


def _unpack(chunk: list[tuple[int, int, Any]], done: Chunk) -> Iterator[tuple]:
    signatures = iter(done.signatures) if done.signatures is not None else None
    bands = iter(done.bands) if done.bands is not None else None
    for (src, line, _), result in zip(chunk, done.results, strict=True):
        if result[0] is None and signatures is not None:  # result[0]: the reason
            yield src, line, result, next(signatures), next(bands)
        else:
            yield src, line, result, None, None
