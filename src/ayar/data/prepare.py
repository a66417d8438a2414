"""The prepare stage: raw inputs in; clean, deduplicated, anonymized splits and a data card out.

Records stream through: read (malformed → ``rejects.jsonl``) → sampling weight → consent →
cleaning → PII redaction → quality filters → exact and near-duplicate removal (removed →
``removed.jsonl`` with the reason) → seeded split. Memory holds hashes, signatures and split keys,
never the records. The accounting always holds: records in = kept + removed + rejected.
Tokenization and packing happen in the training engine, which caches them by fingerprint.

Per-record work runs in ``data.num_proc`` processes on chunks of records; the main process keeps
the input order, the accounting and the (inherently serial) dedup index. ``datasets.map(num_proc=)``
is not used here: it needs the whole input converted to Arrow first, and rejects with line numbers
and first-of-cluster dedup need one ordered pass anyway. The per-record work is
:mod:`ayar.data.record_processor`, writing the splits :mod:`ayar.data.split_writer`, the card's token
figures :mod:`ayar.data.token_report`, and the folder it all lands in :class:`~ayar.data.prepared.PreparedData`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ayar.console import say
from ayar.data.card import DataCard
from ayar.data.dedup import Deduplicator
from ayar.data.load import iter_items
from ayar.data.prepared import PreparedData
from ayar.data.record_processor import REJECT, dump_json, processed_records, stratify_field
from ayar.data.shapes import CHAT_FORMATS
from ayar.data.split_writer import SplitKeys, write_splits
from ayar.data.synthetic import as_preference, generate_records
from ayar.data.synthetic_tools import synthetic_tool_records, uses_tool_tasks
from ayar.data.token_report import loss_mask_report, token_stats
from ayar.errors import AyarError, UsageError
from ayar.recipe import DataConfig

# PreparedData and CHAT_FORMATS are defined beside this module and stay importable from it.
__all__ = ["CHAT_FORMATS", "PreparedData", "prepare", "prepare_files"]

REASONS_WITHOUT_CONTENT = {"sampled_out", "no_consent", "opted_out"}  # never copy these records' text


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
        card.tokens = token_stats(prepared, tokenizer, cfg)
        if any(s["format"] in CHAT_FORMATS for s in sources):
            card.loss_mask = loss_mask_report(prepared, tokenizer, cfg)
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
    split_keys = SplitKeys(cfg.split.group_by is not None, stratify_field(cfg) is not None)
    stream = _stream(cfg, sources, seed, raw=True)  # JSONL lines are parsed in the workers
    source_json = [dump_json(s["path"]) for s in sources]
    in_per_source = [0] * len(sources)
    with (out_dir / "rejects.jsonl").open("wb") as rejects, (out_dir / "removed.jsonl").open("wb") as removed, \
            kept_path.open("wb") as kept:
        dedup = Deduplicator(cfg.dedup)
        # The serial part of the stage: every statement here runs once per record in one process.
        for src, line, result, signature, bands in processed_records(cfg, stream, (cfg, sources, seed, tokenizer)):
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
    return write_splits(cfg, out_dir, kept_path, seed, split_keys, copies, card, tokenizer)


def _write_removed(f: Any, card: DataCard, reason: str, source_json: str, line: int, payload: bytes) -> None:
    """One removed.jsonl row; consent and sampling removals carry the id only, never the text."""
    field_name = "id" if reason in REASONS_WITHOUT_CONTENT else "record"
    head = f'{{"reason": "{reason}", "source": {source_json}, "line": {line}, "{field_name}": '
    f.write(head.encode("utf-8") + payload + b"}\n")

    def example() -> Any:
        value = json.loads(payload)
        return {"source": json.loads(source_json), "line": line, "id": value} if field_name == "id" else value

    card.remove(reason, example)


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
