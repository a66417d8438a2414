"""The prepare stage: raw inputs in; clean, deduplicated, anonymized splits and a data card out.

Records stream through: read (malformed → ``rejects.jsonl``) → sampling weight → consent →
cleaning → PII redaction → quality filters → exact and near-duplicate removal (removed →
``removed.jsonl`` with the reason) → seeded split. Memory holds hashes, signatures and split keys,
never the records. The accounting always holds: records in = kept + removed + rejected.
Tokenization and packing happen in the training engine, which caches them by fingerprint.
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

import xxhash
from pydantic import ValidationError

from ayar.data.card import DataCard
from ayar.data.clean import TextCleaner
from ayar.data.consent import ConsentFilter
from ayar.data.dedup import Deduplicator
from ayar.data.load import Reject, iter_items, map_texts, record_texts, response_texts, to_record
from ayar.data.pii import redact_pii
from ayar.data.quality import QualityFilter
from ayar.data.split import SPLITS, assign_splits
from ayar.data.synthetic import generate_records
from ayar.errors import AyarError, UsageError
from ayar.recipe import DataConfig

CHUNK = 1000  # records per task sent to a worker process
IN_FLIGHT = 3  # chunks queued per worker: enough to keep workers busy, few enough to bound memory
REASONS_WITHOUT_CONTENT = {"sampled_out", "no_consent", "opted_out"}  # never copy these records' text


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


# ---------------------------------------------------------------- per-record work (runs in workers)

REJECT = "__reject__"


class Result(NamedTuple):
    """What a worker sends back for one item; ``payload`` is JSON text (records are serialized once)."""

    reason: str | None  # a removal reason, REJECT, or None for a record to dedup and keep
    payload: str  # the record (cleaned, redacted), the reject row, or only the id for consent/sampling
    changed: tuple[str, ...] = ()
    pii: dict[str, int] | None = None
    key: int = 0
    signature: Any = None
    prompt_chars: int = 0
    response_chars: int = 0
    stratum: Any = None
    group: Any = None


class RecordProcessor:
    """Parsing, shape check, sampling, consent, cleaning, PII and quality for one item, plus dedup keys."""

    def __init__(self, cfg: DataConfig, sources: list[dict[str, Any]], seed: int, tokenizer: str | None) -> None:
        self.cfg = cfg
        self.sources = sources
        self.seed = seed
        self.consent = ConsentFilter(cfg.consent)
        self.cleaner = TextCleaner(cfg.clean)
        self.dedup = Deduplicator(cfg.dedup.model_copy(update={"exact": False}))  # keys() only; admit is serial
        self.pii_types = tuple(cfg.pii.types)
        self.stratify_by = _stratify_field(cfg)
        count_tokens = None
        if cfg.filters.min_tokens > 0 or cfg.filters.max_tokens is not None:
            if not tokenizer:
                raise UsageError("data.filters.min_tokens/max_tokens need a tokenizer: set data.tokenizer")
            tok = _load_tokenizer(tokenizer)
            count_tokens = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        self.quality = QualityFilter(cfg.filters, count_tokens)

    def sampled_out(self, src: int, line: int) -> bool:
        """A weight below 1 keeps that share of a source; the draw depends only on seed, source and line."""
        weight = self.sources[src]["weight"]
        return weight < 1.0 and xxhash.xxh64_intdigest(f"{self.seed}-{src}-{line}".encode()) / 2**64 >= weight

    def _in_step_order(self, changed: set[str]) -> tuple[str, ...]:
        """The cleaning steps that changed a record, in pipeline order (a set's order varies per process)."""
        return tuple(name for name in self.cleaner.step_names if name in changed) if changed else ()

    def __call__(self, src: int, line: int, item: Any) -> Result:
        source = self.sources[src]
        record = to_record(item, source["format"], source["columns"], source["path"], line)
        if isinstance(record, Reject):
            row = record.to_dict()
            row["raw"] = redact_pii(row["raw"])[0]
            return Result(REJECT, _dumps(row))
        reason = "sampled_out" if self.sampled_out(src, line) else self.consent.reason(record)
        if reason:
            return Result(reason, _dumps(record.get(self.cfg.consent.id_field)))
        fmt = source["format"]
        lang = record.get("lang") if isinstance(record.get("lang"), str) else None
        changed: set[str] = set()
        map_texts(record, fmt, lambda text: self.cleaner(text, lang, changed))
        pii: Counter = Counter()
        if self.cfg.pii.enabled:
            map_texts(record, fmt, lambda text: _redact_into(text, self.pii_types, pii))
        texts = record_texts(record, fmt)
        responses = response_texts(record, fmt)
        reason = self.quality.reason("\n".join(texts), responses)
        if reason:
            return Result(reason, _dumps(record), self._in_step_order(changed), dict(pii))
        key, signature = self.dedup.keys(texts, lang or self.cfg.clean.language)
        response_chars = sum(map(len, responses)) if responses else 0
        group = record.get(self.cfg.split.group_by) if self.cfg.split.group_by else None
        stratum = record.get(self.stratify_by) if self.stratify_by else None
        return Result(None, _dumps(record), self._in_step_order(changed), dict(pii), key, signature,
                      sum(map(len, texts)) - response_chars, response_chars, stratum, group)


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def _redact_into(text: str, types: tuple[str, ...], counts: Counter) -> str:
    new, found = redact_pii(text, types)
    counts.update(found)
    return new


def _stratify_field(cfg: DataConfig) -> str | None:
    return cfg.split.stratify_by or ("label" if cfg.format == "classification" else None)


_WORKER: RecordProcessor | None = None


def _init_worker(*args: Any) -> None:
    global _WORKER
    _WORKER = RecordProcessor(*args)


def _process_chunk(chunk: list[tuple[int, int, Any]]) -> list[Result]:
    assert _WORKER is not None
    return [_WORKER(src, line, item) for src, line, item in chunk]


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
            records = generate_records(syn.num_records, seed, list(syn.languages), list(syn.tasks))
            items: Iterator = enumerate(records, start=1)
        else:
            items = iter_items(source["path"], source["format"], source["split"], raw=raw)
        for line, item in items:
            yield index, line, item


def _processed(cfg: DataConfig, stream: Iterator[tuple[int, int, Any]], init: tuple) -> Iterator[tuple]:
    """((source, line), Result) in input order; with num_proc > 1 the work is spread over processes."""
    if cfg.num_proc == 1:
        processor = RecordProcessor(*init)
        for src, line, item in stream:
            yield (src, line), processor(src, line, item)
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
            for (src, line, _), result in zip(chunk, future.get(), strict=True):
                yield (src, line), result


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
    prepared.card = card.write(out_dir)
    print(f"prepare: {card.accounting_line()}")
    print(f"prepare: splits {prepared.counts}")
    if not card.balanced:
        raise AyarError(f"record accounting does not balance: {card.accounting_line()}")
    if card.kept == 0:
        raise UsageError(f"no records left after preparation ({card.accounting_line()}): "
                         f"see {out_dir / 'rejects.jsonl'} and {out_dir / 'removed.jsonl'}")
    return prepared


def _run(cfg: DataConfig, out_dir: Path, seed: int, tokenizer: str | None, sources: list[dict[str, Any]],
         card: DataCard, kept_path: Path) -> PreparedData:
    """Stream every record through the pipeline, then write the splits."""
    split_keys = _SplitKeys(cfg.split.group_by is not None, _stratify_field(cfg) is not None)
    stream = _stream(cfg, sources, seed, raw=cfg.num_proc > 1)
    with (out_dir / "rejects.jsonl").open("w", encoding="utf-8") as rejects, \
            (out_dir / "removed.jsonl").open("w", encoding="utf-8") as removed, \
            kept_path.open("w", encoding="utf-8") as kept:
        dedup = Deduplicator(cfg.dedup)
        for (src, line), result in _processed(cfg, stream, (cfg, sources, seed, tokenizer)):
            stats = card.sources[src]
            stats["records_in"] += 1
            card.records_in += 1
            reason = result.reason
            if reason == REJECT:
                row = json.loads(result.payload)
                if cfg.strict:
                    raise UsageError(f"{row['source']}:{row['line']}: {row['reason']} (strict mode)")
                stats["rejected"] += 1
                card.reject(row)
                rejects.write(result.payload + "\n")
                continue
            if reason == "sampled_out":
                stats["sampled_out"] += 1
            card.cleaned.update(result.changed)
            if result.pii:
                card.pii.update(result.pii)
                card.pii_records += 1
            if reason is None:
                reason = dedup.admit(result.key, result.signature)
            if reason:
                _write_removed(removed, card, reason, sources[src]["path"], line, result.payload)
                continue
            kept.write(result.payload + "\n")
            card.keep(result.prompt_chars, result.response_chars)
            split_keys.add(src, result.stratum, result.group)
        del dedup
    for stats in card.sources:
        if stats["records_in"] == 0:
            raise UsageError(f"data input {stats['path']} holds no records")
    copies = [max(1, math.floor(s["weight"])) for s in sources]  # weight > 1 repeats training records
    return _write_splits(cfg, out_dir, kept_path, seed, split_keys, copies, card)


def _write_removed(f: Any, card: DataCard, reason: str, source: str, line: int, payload: str) -> None:
    """One removed.jsonl row; consent and sampling removals carry the id only, never the text."""
    field_name = "id" if reason in REASONS_WITHOUT_CONTENT else "record"
    f.write(f'{{"reason": "{reason}", "source": {_dumps(source)}, "line": {line}, "{field_name}": {payload}}}\n')

    def example() -> Any:
        value = json.loads(payload)
        return {"source": source, "line": line, "id": value} if field_name == "id" else value

    card.remove(reason, example)


@dataclass
class _SplitKeys:
    """Per kept record: its source, and its group and stratum when the split needs them."""

    grouped: bool
    stratified: bool
    origin: array = field(default_factory=lambda: array("H"))
    groups: list[Any] = field(default_factory=list)
    strata: list[Any] = field(default_factory=list)

    def add(self, src: int, stratum: Any, group: Any) -> None:
        self.origin.append(src)
        if self.grouped:
            self.groups.append(group)
        if self.stratified:
            self.strata.append(stratum)


def _write_splits(cfg: DataConfig, out_dir: Path, kept_path: Path, seed: int, keys: _SplitKeys,
                  copies: list[int], card: DataCard) -> PreparedData:
    fractions = (cfg.split.train, cfg.split.validation, cfg.split.test)
    split_seed = cfg.split.seed if cfg.split.seed is not None else seed
    assignment = assign_splits(len(keys.origin), fractions, split_seed, keys.strata if keys.stratified else None,
                               keys.groups if keys.grouped else None)
    prepared = PreparedData(out_dir, counts=dict.fromkeys(SPLITS, 0))
    files = {name: prepared.split_path(name).open("w", encoding="utf-8") for name in SPLITS}
    try:
        with kept_path.open(encoding="utf-8") as kept:
            for line, split_index, src in zip(kept, assignment, keys.origin, strict=True):
                name = SPLITS[split_index]
                times = copies[src] if name == "train" else 1
                files[name].write(line * times)
                prepared.counts[name] += times
                card.train_repeats += times - 1
    finally:
        for f in files.values():
            f.close()
    card.splits = dict(prepared.counts)
    if cfg.save_arrow:
        _save_arrow(prepared, card)
    return prepared


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
                    print(f"prepare: warning: {note}")
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
