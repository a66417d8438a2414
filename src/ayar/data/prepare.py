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
import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ayar.data.card import DataCard
from ayar.data.clean import TextCleaner
from ayar.data.consent import ConsentFilter
from ayar.data.dedup import Deduplicator
from ayar.data.load import Reject, iter_records, map_texts, record_texts, response_texts
from ayar.data.pii import redact_pii
from ayar.data.quality import QualityFilter
from ayar.data.split import SPLITS, assign_splits
from ayar.data.synthetic import generate_records
from ayar.errors import UsageError
from ayar.recipe import DataConfig

CHUNK = 1000  # records per task sent to a worker process
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


class RecordProcessor:
    """Consent, cleaning, PII and quality for one record, plus its dedup keys."""

    def __init__(self, cfg: DataConfig, tokenizer: str | None) -> None:
        self.cfg = cfg
        self.consent = ConsentFilter(cfg.consent)
        self.cleaner = TextCleaner(cfg.clean)
        self.dedup = Deduplicator(cfg.dedup)  # only its keys() is used here; admission is sequential
        count_tokens = None
        if cfg.filters.min_tokens > 0 or cfg.filters.max_tokens is not None:
            if not tokenizer:
                raise UsageError("data.filters.min_tokens/max_tokens need a tokenizer: set data.tokenizer")
            tok = _load_tokenizer(tokenizer)
            count_tokens = lambda text: len(tok(text, add_special_tokens=False)["input_ids"])  # noqa: E731
        self.quality = QualityFilter(cfg.filters, count_tokens)

    def __call__(self, fmt: str, record: dict[str, Any]) -> tuple:
        reason = self.consent.reason(record)
        if reason:
            return reason, record, (), None, 0, None, 0, 0
        lang = record.get("lang") if isinstance(record.get("lang"), str) else None
        changed: set[str] = set()
        map_texts(record, fmt, lambda text: self.cleaner(text, lang, changed))
        pii: Counter = Counter()
        if self.cfg.pii.enabled:
            def redact(text: str) -> str:
                new, counts = redact_pii(text, self.cfg.pii.types)
                pii.update(counts)
                return new

            map_texts(record, fmt, redact)
        texts = record_texts(record, fmt)
        responses = response_texts(record, fmt)
        reason = self.quality.reason("\n".join(texts), responses)
        if reason:
            return reason, record, tuple(changed), pii, 0, None, 0, 0
        key, signature = self.dedup.keys(texts, lang or self.cfg.clean.language)
        response_chars = sum(len(r) for r in responses) if responses else 0
        return None, record, tuple(changed), pii, key, signature, sum(map(len, texts)) - response_chars, response_chars


_WORKER: RecordProcessor | None = None


def _init_worker(cfg: DataConfig, tokenizer: str | None) -> None:
    global _WORKER
    _WORKER = RecordProcessor(cfg, tokenizer)


def _process_chunk(chunk: list[tuple[int, int, str, dict[str, Any]]]) -> list[tuple]:
    assert _WORKER is not None
    return [_WORKER(fmt, record) for _, _, fmt, record in chunk]


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


def _items(cfg: DataConfig, source: dict[str, Any], seed: int) -> Iterator[tuple[int, dict[str, Any] | Reject]]:
    if source["path"] == "synthetic":
        syn = cfg.synthetic
        records = generate_records(syn.num_records, seed, list(syn.languages), list(syn.tasks))
        return enumerate(records, start=1)
    return iter_records(source["path"], source["format"], source["columns"], source["split"])


class _Writer:
    """rejects.jsonl and removed.jsonl, written as records stream by."""

    def __init__(self, out_dir: Path, card: DataCard) -> None:
        self.card = card
        self.rejects = (out_dir / "rejects.jsonl").open("w", encoding="utf-8")
        self.removed = (out_dir / "removed.jsonl").open("w", encoding="utf-8")

    def reject(self, reject: Reject) -> None:
        row = reject.to_dict()
        row["raw"] = redact_pii(row["raw"])[0]
        self.card.reject(row)
        self.rejects.write(json.dumps(row, ensure_ascii=False) + "\n")

    def remove(self, reason: str, source: str, line: int, record: dict[str, Any], id_field: str) -> None:
        if reason in REASONS_WITHOUT_CONTENT:
            row = {"reason": reason, "source": source, "line": line, "id": record.get(id_field)}
            self.card.remove(reason, {k: v for k, v in row.items() if k != "reason"})
        else:
            row = {"reason": reason, "source": source, "line": line, "record": record}
            self.card.remove(reason, record)
        self.removed.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")

    def close(self) -> None:
        self.rejects.close()
        self.removed.close()


def _stream(cfg: DataConfig, sources: list[dict[str, Any]], seed: int, writer: _Writer,
            copies: list[int]) -> Iterator[tuple[int, int, str, dict[str, Any]]]:
    """(source index, line, format, record) of every readable record that survives sampling."""
    card = writer.card
    for index, source in enumerate(sources):
        stats = {"path": source["path"], "format": source["format"], "weight": source["weight"],
                 "records_in": 0, "rejected": 0, "sampled_out": 0}
        card.sources.append(stats)
        rng = random.Random(f"{seed}-{index}")
        keep_share = min(source["weight"], 1.0)
        for line, item in _items(cfg, source, seed):
            card.records_in += 1
            stats["records_in"] += 1
            if isinstance(item, Reject):
                if cfg.strict:
                    raise UsageError(f"{item.source}:{item.line}: {item.reason} (strict mode)")
                stats["rejected"] += 1
                writer.reject(item)
                continue
            if keep_share < 1.0 and rng.random() >= keep_share:
                stats["sampled_out"] += 1
                writer.remove("sampled_out", source["path"], line, item, cfg.consent.id_field)
                continue
            yield index, line, source["format"], item
        if stats["records_in"] == 0:
            raise UsageError(f"data input {source['path']} holds no records")
    for source in sources:  # weight > 1 repeats a source's training records (after dedup and split)
        copies.append(max(1, math.floor(source["weight"])))


def _processed(cfg: DataConfig, stream: Iterator, tokenizer: str | None) -> Iterator[tuple[tuple, tuple]]:
    """(item, result) pairs in input order; with num_proc > 1 the work is spread over processes."""
    if cfg.num_proc == 1:
        processor = RecordProcessor(cfg, tokenizer)
        for item in stream:
            yield item, processor(item[2], item[3])
        return
    context = multiprocessing.get_context("fork")
    with context.Pool(cfg.num_proc, initializer=_init_worker, initargs=(cfg, tokenizer)) as pool:
        while True:  # a bounded window of chunks at a time keeps memory flat on any input size
            window = [list(islice(stream, CHUNK)) for _ in range(2 * cfg.num_proc)]
            window = [chunk for chunk in window if chunk]
            if not window:
                return
            for chunk, results in zip(window, pool.map(_process_chunk, window), strict=True):
                yield from zip(chunk, results, strict=True)


# ---------------------------------------------------------------- the stage


def prepare(cfg: DataConfig, out_dir: Path, seed: int, tokenizer: str | None = None) -> PreparedData:
    """Run the whole pipeline into ``out_dir``; ``tokenizer`` (else ``cfg.tokenizer``) is the target model's."""
    tokenizer = tokenizer or cfg.tokenizer
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = _source_list(cfg)
    card = DataCard(examples_per_reason=cfg.card_examples)
    writer = _Writer(out_dir, card)
    dedup = Deduplicator(cfg.dedup)
    stratify_by = cfg.split.stratify_by or ("label" if cfg.format == "classification" else None)
    strata: list[Any] | None = [] if stratify_by else None
    groups: list[Any] | None = [] if cfg.split.group_by else None
    origin: list[int] = []
    copies: list[int] = []
    kept_path = out_dir / ".kept.jsonl"
    try:
        with kept_path.open("w", encoding="utf-8") as kept:
            for (src, line, _fmt, _), result in _processed(cfg, _stream(cfg, sources, seed, writer, copies), tokenizer):
                reason, record, changed, pii, key, signature, prompt_chars, response_chars = result
                card.cleaned.update(changed)
                if pii:
                    card.pii.update(pii)
                    card.pii_records += 1
                if reason is None:
                    reason = dedup.admit(key, signature)
                if reason:
                    writer.remove(reason, sources[src]["path"], line, record, cfg.consent.id_field)
                    continue
                kept.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
                card.keep(prompt_chars, response_chars)
                origin.append(src)
                if strata is not None:
                    strata.append(record.get(stratify_by))
                if groups is not None:
                    groups.append(record.get(cfg.split.group_by))
    finally:
        writer.close()
    del dedup
    prepared = _write_splits(cfg, out_dir, kept_path, seed, strata, groups, origin, copies, card)
    kept_path.unlink()
    if card.kept == 0:
        card.notes.append("no record survived: see rejects.jsonl and removed.jsonl")
    if tokenizer and card.kept:
        card.tokens = _token_stats(prepared, tokenizer, cfg)
    prepared.card = card.write(out_dir)
    print(f"prepare: {card.accounting_line()}")
    print(f"prepare: splits {prepared.counts}")
    if not card.balanced:
        raise AssertionError(f"record accounting does not balance: {card.accounting_line()}")
    if card.kept == 0:
        raise UsageError(f"no records left after preparation ({card.accounting_line()}): "
                         f"see {out_dir / 'rejects.jsonl'} and {out_dir / 'removed.jsonl'}")
    return prepared


def _write_splits(cfg: DataConfig, out_dir: Path, kept_path: Path, seed: int, strata: list | None,
                  groups: list | None, origin: list[int], copies: list[int], card: DataCard) -> PreparedData:
    fractions = (cfg.split.train, cfg.split.validation, cfg.split.test)
    split_seed = cfg.split.seed if cfg.split.seed is not None else seed
    assignment = assign_splits(len(origin), fractions, split_seed, strata, groups)
    prepared = PreparedData(out_dir, counts=dict.fromkeys(SPLITS, 0))
    files = {name: prepared.split_path(name).open("w", encoding="utf-8") for name in SPLITS}
    try:
        with kept_path.open(encoding="utf-8") as kept:
            for line, split_index, src in zip(kept, assignment, origin, strict=True):
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
