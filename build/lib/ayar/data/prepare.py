"""The prepare stage: raw inputs in; clean, deduplicated, anonymized splits and a data card out.

Records stream through: read (malformed → ``rejects.jsonl``) → sampling weight → consent →
cleaning → PII redaction → quality filters → exact and near-duplicate removal (removed →
``removed.jsonl`` with the reason) → seeded split. Memory holds hashes, signatures and split keys,
never the records. The accounting always holds: records in = kept + removed + rejected.
Tokenization and packing happen in the training engine, which caches them by fingerprint.

Per-record work runs in ``data.num_proc`` processes on chunks of records; the main process keeps
the input order, the accounting and the (inherently serial) dedup index. ``datasets.map(num_proc=)``
is not used here: it needs the whole input converted to Arrow first, and rejects with line numbers
and first-of-cluster dedup need one ordered pass anyway.
"""

from __future__ import annotations

import json
import math
import multiprocessing
from array import array
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import xxhash
from pydantic import ValidationError

from ayar.console import say, warn
from ayar.data.card import DataCard
from ayar.data.clean import TextCleaner
from ayar.data.consent import ConsentFilter
from ayar.data.dedup import Deduplicator, normalize_words
from ayar.data.load import Reject, iter_items, map_texts, prose_texts, record_texts, response_texts, to_record
from ayar.data.pii import redact_pii, redact_pii_into
from ayar.data.quality import QualityFilter
from ayar.data.rehearsal import REHEARSAL_FILE
from ayar.data.split import SPLITS, assign_splits
from ayar.data.synthetic import as_preference, generate_records
from ayar.data.synthetic_tools import synthetic_tool_records, uses_tool_tasks
from ayar.data.windows import Windower, window_records
from ayar.errors import AyarError, UsageError
from ayar.recipe import DataConfig

CHAT_FORMATS = ("alpaca", "messages", "sharegpt")  # formats the training engine renders with the chat template
CHUNK = 1000  # records per task sent to a worker process
IN_FLIGHT = 3  # chunks queued per worker: enough to keep workers busy, few enough to bound memory
REASONS_WITHOUT_CONTENT = {"sampled_out", "no_consent", "opted_out"}  # never copy these records' text
MAX_CHARS = 2**32 - 1  # the data card keeps lengths as uint32


@dataclass
class PreparedData:
    """Where the prepared splits are, and how many records each holds."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    card: dict[str, Any] = field(default_factory=dict)

    def split_path(self, split: str) -> Path:
        return self.root / f"{split}.jsonl"

    def read_split(self, split: str) -> list[dict[str, Any]]:
        path = self.split_path(split)
        if not path.is_file():
            raise UsageError(f"prepared split not found: {path} (run `ayar prepare` first)")
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def read_rehearsal(self) -> list[dict[str, Any]] | None:
        """The rehearsal records beside the splits (``data.rehearsal``), or None when prepare wrote none."""
        path = self.root / REHEARSAL_FILE
        if not path.is_file():
            return None
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


# ---------------------------------------------------------------- per-record work (runs in workers)

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
        self.stratify_by = _stratify_field(cfg)
        count_tokens = None
        if cfg.filters.min_tokens > 0 or cfg.filters.max_tokens is not None:
            if not tokenizer:
                raise UsageError("data.filters.min_tokens/max_tokens need a tokenizer: set data.tokenizer")
            tok = _load_tokenizer(tokenizer)
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
            return Result(REJECT, _encode(row)), None
        reason = "sampled_out" if self.sampled_out(src, line) else self.consent.reason(record)
        if reason:
            return Result(reason, _encode(record.get(self.cfg.consent.id_field))), None
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
            return Result(reason, _encode(record), changed_steps, pii_counts), None
        normalized = normalize_words(field_words, lang or self.cfg.clean.language)
        key, hashes = self.dedup.keys(texts, None, normalized)
        response_chars = sum(map(len, responses)) if responses else 0
        prompt_chars = sum(map(len, texts)) - response_chars
        group = record.get(self.cfg.split.group_by) if self.cfg.split.group_by else None
        stratum = record.get(self.stratify_by) if self.stratify_by else None
        return Result(None, _encode(record), changed_steps, pii_counts, key, min(prompt_chars, MAX_CHARS),
                      min(response_chars, MAX_CHARS), stratum, group), hashes


_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)  # json.dumps with options builds one per call


def _dumps(value: Any) -> str:
    return _ENCODER.encode(value)


def _encode(value: Any) -> bytes:
    """UTF-8 JSON, made in the worker so that the main process only copies bytes."""
    return _ENCODER.encode(value).encode("utf-8")


def _stratify_field(cfg: DataConfig) -> str | None:
    return cfg.split.stratify_by or ("label" if cfg.format == "classification" else None)


_WORKER: RecordProcessor | None = None


def _init_worker(*args: Any) -> None:
    global _WORKER
    _WORKER = RecordProcessor(*args)


def _process_chunk(chunk: list[tuple[int, int, Any]]) -> Chunk:
    assert _WORKER is not None
    return _WORKER.process(chunk)


# ---------------------------------------------------------------- reading


def _load_tokenizer(name: str) -> Any:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise UsageError(f"data.tokenizer '{name}' could not be loaded: {exc}") from None


def _source_list(cfg: DataConfig) -> list[dict[str, Any]]:
    if cfg.synthetic is not None:
        return [{"path": "synthetic", "format": cfg.format, "weight": 1.0, "columns": {}, "split": None}]
    if not cfg.inputs:
        raise UsageError("data.inputs is empty and data.synthetic is not set: nothing to prepare")
    return [{"path": s.path, "format": s.format or cfg.format, "weight": s.weight, "columns": s.columns,
             "split": s.split} for s in cfg.inputs]


def _stream(cfg: DataConfig, sources: list[dict[str, Any]], seed: int, raw: bool) -> Iterator[tuple[int, int, Any]]:
    """(source index, line, item) of every input; items are parsed and checked by the workers."""
    for index, source in enumerate(sources):
        if source["path"] == "synthetic":
            syn = cfg.synthetic
            if uses_tool_tasks(list(syn.tasks)):  # conversations with tools, in the OpenAI messages shape
                records = synthetic_tool_records(cfg, seed)
            else:
                records = generate_records(syn.num_records, seed, list(syn.languages), list(syn.tasks),
                                           syn.guide_spans)
            if cfg.format == "preference":  # pairs for the preference methods: the right answer against a wrong one
                records = (as_preference(r, seed) for r in records)
            items: Iterator = enumerate(records, start=1)
        else:
            items = iter_items(source["path"], source["format"], source["split"], raw=raw,
                               text_unit=cfg.long_text.txt_records)
        for line, item in items:
            yield index, line, item


def _processed(cfg: DataConfig, stream: Iterator[tuple[int, int, Any]], init: tuple) -> Iterator[tuple]:
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


# ---------------------------------------------------------------- the stage


def prepare(cfg: DataConfig, out_dir: Path, seed: int, tokenizer: str | None = None) -> PreparedData:
    """Run the whole pipeline into ``out_dir``; ``tokenizer`` (else ``cfg.tokenizer``) is the target model's."""
    tokenizer = tokenizer or cfg.tokenizer
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = _source_list(cfg)
    card = DataCard(examples_per_reason=cfg.card_examples)
    card.sources = [{"path": s["path"], "format": s["format"], "weight": s["weight"], "records_in": 0,
                     "rejected": 0, "sampled_out": 0} for s in sources]
    kept_path = out_dir / ".kept.jsonl"
    try:
        prepared = _run(cfg, out_dir, seed, tokenizer, sources, card, kept_path)
    finally:
        kept_path.unlink(missing_ok=True)
    if tokenizer and card.kept:
        card.tokens = _token_stats(prepared, tokenizer, cfg)
        if any(s["format"] in CHAT_FORMATS for s in sources):
            card.loss_mask = _loss_mask_report(prepared, tokenizer, cfg)
    prepared.card = card.write(out_dir)
    say(f"prepare: {card.accounting_line()}")
    say(f"prepare: splits {prepared.counts}")
    if not card.balanced:
        raise AyarError(f"record accounting does not balance: {card.accounting_line()}")
    if card.kept == 0:
        raise UsageError(f"no records left after preparation ({card.accounting_line()}): "
                         f"see {out_dir / 'rejects.jsonl'} and {out_dir / 'removed.jsonl'}")
    if card.loss_mask and card.loss_mask["records_measured"] and not card.loss_mask["learned_tokens"]:
        raise UsageError(f"no assistant token is learned in the training split (loss mask in "
                         f"{out_dir / 'data_card.md'}): the records have no assistant turn to learn, every "
                         f"assistant turn is marked train: false / weight: 0, or data.max_length "
                         f"({cfg.max_length}) cuts every answer off")
    return prepared


def _run(cfg: DataConfig, out_dir: Path, seed: int, tokenizer: str | None, sources: list[dict[str, Any]],
         card: DataCard, kept_path: Path) -> PreparedData:
    """Stream every record through the pipeline, then write the splits."""
    split_keys = _SplitKeys(cfg.split.group_by is not None, _stratify_field(cfg) is not None)
    stream = _stream(cfg, sources, seed, raw=True)  # JSONL lines are parsed in the workers
    source_json = [_dumps(s["path"]) for s in sources]
    in_per_source = [0] * len(sources)
    with (out_dir / "rejects.jsonl").open("wb") as rejects, (out_dir / "removed.jsonl").open("wb") as removed, \
            kept_path.open("wb") as kept:
        dedup = Deduplicator(cfg.dedup)
        # The serial part of the stage: every statement here runs once per record in one process.
        for src, line, result, signature, bands in _processed(cfg, stream, (cfg, sources, seed, tokenizer)):
            reason, payload, changed, pii, key, prompt_chars, response_chars, stratum, group = result
            in_per_source[src] += 1
            if reason == REJECT:
                row = json.loads(payload)
                if cfg.strict:
                    raise UsageError(f"{row['source']}:{row['line']}: {row['reason']} (strict mode)")
                card.sources[src]["rejected"] += 1
                card.reject(row)
                rejects.write(payload + b"\n")
                continue
            if reason == "sampled_out":
                card.sources[src]["sampled_out"] += 1
            if changed:
                card.cleaned.update(changed)
            if pii:
                card.pii.update(pii)
                card.pii_records += 1
            if reason is None:
                reason = dedup.admit(key, signature, bands)
            if reason:
                _write_removed(removed, card, reason, source_json[src], line, payload)
                continue
            kept.write(payload + b"\n")
            card.keep(prompt_chars, response_chars)
            split_keys.add(src, stratum, group, line)
        del dedup
    for stats, count in zip(card.sources, in_per_source, strict=True):
        stats["records_in"] = count
        if count == 0:
            raise UsageError(f"data input {stats['path']} holds no records")
    card.records_in = sum(in_per_source)
    copies = [max(1, math.floor(s["weight"])) for s in sources]  # weight > 1 repeats training records
    return _write_splits(cfg, out_dir, kept_path, seed, split_keys, copies, card, tokenizer)


def _write_removed(f: Any, card: DataCard, reason: str, source_json: str, line: int, payload: bytes) -> None:
    """One removed.jsonl row; consent and sampling removals carry the id only, never the text."""
    field_name = "id" if reason in REASONS_WITHOUT_CONTENT else "record"
    head = f'{{"reason": "{reason}", "source": {source_json}, "line": {line}, "{field_name}": '
    f.write(head.encode("utf-8") + payload + b"}\n")

    def example() -> Any:
        value = json.loads(payload)
        return {"source": json.loads(source_json), "line": line, "id": value} if field_name == "id" else value

    card.remove(reason, example)


@dataclass
class _SplitKeys:
    """Per kept record: its source, and its group and stratum when the split needs them."""

    grouped: bool
    stratified: bool
    origin: array = field(default_factory=lambda: array("H"))
    lines: array = field(default_factory=lambda: array("Q"))
    groups: list[Any] = field(default_factory=list)
    strata: list[Any] = field(default_factory=list)

    def add(self, src: int, stratum: Any, group: Any, line: int = 0) -> None:
        self.origin.append(src)
        self.lines.append(line)
        if self.grouped:
            self.groups.append(group)
        if self.stratified:
            self.strata.append(stratum)


def _write_splits(cfg: DataConfig, out_dir: Path, kept_path: Path, seed: int, keys: _SplitKeys,
                  copies: list[int], card: DataCard, tokenizer: str | None = None) -> PreparedData:
    fractions = (cfg.split.train, cfg.split.validation, cfg.split.test)
    split_seed = cfg.split.seed if cfg.split.seed is not None else seed
    assignment = assign_splits(len(keys.origin), fractions, split_seed, keys.strata if keys.stratified else None,
                               keys.groups if keys.grouped else None)
    prepared = PreparedData(out_dir)
    files = [prepared.split_path(name).open("wb") for name in SPLITS]
    counts = [0] * len(SPLITS)
    base_train = 0
    windows = _WindowStep.for_data(cfg, tokenizer, card) if any(
        s["format"] == "text" for s in card.sources) else None
    try:
        with kept_path.open("rb") as kept:  # bytes in, bytes out: JSON lines need no decoding here
            for line, split_index, src, line_no in zip(kept, assignment, keys.origin, keys.lines, strict=True):
                times = copies[src] if split_index == 0 else 1  # 0: train
                if windows is not None and card.sources[src]["format"] == "text":
                    line = windows(line, card.sources[src]["path"], line_no)
                files[split_index].write(line * times if times > 1 else line)
                records = line.count(b"\n")  # one JSON line per record or window
                counts[split_index] += times * records
                base_train += records if split_index == 0 else 0
    finally:
        for f in files:
            f.close()
    prepared.counts = dict(zip(SPLITS, counts, strict=True))
    if windows is not None:
        card.windows = windows.summary()
    card.train_repeats += counts[0] - base_train
    card.splits = dict(prepared.counts)
    if cfg.save_arrow:
        _save_arrow(prepared, card)
    return prepared


class _WindowStep:
    """Splits kept text records into windows, counting windows per document for the data card."""

    SHOWN = 50  # documents listed one by one in the card

    def __init__(self, windower: Windower) -> None:
        self.windower = windower
        self.per_document: list[int] = []
        self.listed: list[dict[str, Any]] = []

    @classmethod
    def for_data(cls, cfg: DataConfig, tokenizer: str | None, card: DataCard) -> _WindowStep | None:
        long_text = cfg.long_text
        if not long_text.split:
            return None
        size = long_text.window_tokens or max(8, cfg.max_length - 4)
        tok = _load_tokenizer(tokenizer) if tokenizer else None
        try:
            windower = Windower(size, long_text.overlap_tokens, tok)
        except ValueError as exc:
            raise UsageError(f"data.long_text: {exc}") from None
        if tok is None:
            card.notes.append(f"text windows measured without a tokenizer ({windower.measured_with}); set "
                              f"data.tokenizer for exact token windows")
        return cls(windower)

    def __call__(self, line: bytes, source: str, line_no: int) -> bytes:
        """The JSON line of one kept text record, as one JSON line per window."""
        record = json.loads(line)
        if not isinstance(record.get("text"), str):
            return line
        doc = record["document"] if isinstance(record.get("document"), str) else f"{source}:{line_no}"
        windows = window_records(record, self.windower, doc)
        self.per_document.append(len(windows))
        if len(self.listed) < self.SHOWN:
            self.listed.append({"doc": doc, "windows": len(windows)})
        if len(windows) == 1:
            return line
        return b"".join(_encode(w) + b"\n" for w in windows)

    def summary(self) -> dict[str, Any]:
        counts = np.array(self.per_document or [0])
        return {"window_tokens": self.windower.size, "overlap_tokens": self.windower.overlap,
                "measured_with": self.windower.measured_with, "documents": len(self.per_document),
                "documents_split": int((counts > 1).sum()), "windows": int(counts.sum()),
                "windows_per_document": {"mean": round(float(counts.mean()), 2), "max": int(counts.max())},
                "per_document": self.listed}


def _save_arrow(prepared: PreparedData, card: DataCard) -> None:
    """Each split as a datasets Arrow folder (arrow/<split>), memory-mapped when loaded back."""
    import tempfile

    import datasets

    bars = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        for name in SPLITS:
            if not prepared.counts[name]:
                card.notes.append(f"arrow/{name} not written: the split is empty")
                continue
            with tempfile.TemporaryDirectory(dir=prepared.root) as cache:
                try:
                    data = datasets.Dataset.from_json(str(prepared.split_path(name)), cache_dir=cache)
                    data.save_to_disk(str(prepared.root / "arrow" / name))
                except Exception as exc:  # mixed value types across records: JSONL stays the source of truth
                    note = f"arrow/{name} not written ({type(exc).__name__}: {str(exc)[:200]})"
                    card.notes.append(note)
                    warn(f"prepare: {note}")
    finally:
        if bars:
            datasets.enable_progress_bars()


def _token_stats(prepared: PreparedData, tokenizer: str, cfg: DataConfig, limit: int = 2000) -> dict[str, Any]:
    """Token counts of (up to ``limit``) training records with the target tokenizer, in batches."""
    import numpy as np

    tok = _load_tokenizer(tokenizer)
    texts: list[str] = []
    with prepared.split_path("train").open(encoding="utf-8") as f:
        for line in islice(f, limit):
            record = json.loads(line)
            texts.append("\n".join(record_texts(record, _record_format(record, cfg.format))))
    if not texts:
        return {}
    lengths = np.array([len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"]])
    return {"tokenizer": tokenizer, "records_measured": len(texts), "mean": round(float(lengths.mean()), 1),
            "p50": float(np.percentile(lengths, 50)), "p95": float(np.percentile(lengths, 95)),
            "max": int(lengths.max()), "total_measured": int(lengths.sum()),
            "over_max_length": int((lengths > cfg.max_length).sum()), "max_length": cfg.max_length}


def _loss_mask_report(prepared: PreparedData, tokenizer: str, cfg: DataConfig, limit: int = 2000) -> dict[str, Any]:
    """Per role, how many tokens (up to ``limit``) training records hold and how many are learned."""
    from ayar.data.templates import record_to_messages, record_tools, set_template
    from ayar.data.tokenize import IGNORE_INDEX, count_mask, tokenize_chat

    tok = _load_tokenizer(tokenizer)
    set_template(tok, cfg.template)
    counts: dict[str, Counter] = {"tokens": Counter(), "learned": Counter()}
    measured = without = 0
    with prepared.split_path("train").open(encoding="utf-8") as f:
        for line in islice(f, limit):
            record = json.loads(line)
            if _record_format(record, cfg.format) not in CHAT_FORMATS:
                continue
            try:
                encoded = tokenize_chat(tok, record_to_messages(record, cfg.system_prompt), cfg.max_length,
                                        cfg.mask_prompt, tools=record_tools(record), with_roles=True)
            except ValueError as exc:  # a template that does not render conversations as prefixes
                return {"records_measured": 0, "roles": {}, "learned_tokens": 0, "note": str(exc)}
            count_mask(encoded, counts)
            measured += 1
            without += all(label == IGNORE_INDEX for label in encoded["labels"])
    roles = {role: {"tokens": counts["tokens"][role], "learned": counts["learned"][role]}
             for role in sorted(counts["tokens"])}
    return {"tokenizer": tokenizer, "template": cfg.template, "records_measured": measured, "roles": roles,
            "learned_tokens": sum(counts["learned"].values()), "records_without_learned_tokens": without}


def _record_format(record: dict[str, Any], default: str) -> str:
    if "messages" in record:
        return "messages"
    return "sharegpt" if "conversations" in record else default


def prepare_files(inputs: list[Path], fmt: str, out_dir: Path, strict: bool = False, seed: int = 42,
                  **overrides: Any) -> PreparedData:
    """Prepare files without a recipe (``ayar prepare --input FILE... --format F --out DIR``).

    ``overrides`` are DataConfig fields (``dedup={"near": False}``, ``num_proc=2``); ``columns`` is
    applied to every input.
    """
    if not inputs:
        raise UsageError("no --input given: name at least one file or folder")
    columns = overrides.pop("columns", {})
    data = {"inputs": [{"path": str(p), "columns": columns} for p in inputs], "format": fmt, "strict": strict,
            **overrides}
    try:
        cfg = DataConfig.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UsageError(f"prepare option '{where}': {err['msg']}") from None
    return prepare(cfg, Path(out_dir), seed)
