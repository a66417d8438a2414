"""Writing the prepare stage's splits: each kept record to its split, long texts cut into windows,
training records repeated by their source's weight, and the splits also saved as Arrow folders."""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ayar.console import warn
from ayar.data.card import DataCard
from ayar.data.prepared import PreparedData
from ayar.data.record_processor import encode_json, load_tokenizer
from ayar.data.split import SPLITS, assign_splits
from ayar.data.windows import Windower, window_records
from ayar.errors import UsageError
from ayar.recipe import DataConfig


@dataclass
class SplitKeys:
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


def write_splits(cfg: DataConfig, out_dir: Path, kept_path: Path, seed: int, keys: SplitKeys,
                 copies: list[int], card: DataCard, tokenizer: str | None = None) -> PreparedData:
    """Each kept record (``kept_path``, in input order) into its seeded split, ``copies[source]`` times in
    train, text records as their windows; the split counts go to the card."""
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
        save_arrow(prepared, card)
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
        tok = load_tokenizer(tokenizer) if tokenizer else None
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
        return b"".join(encode_json(w) + b"\n" for w in windows)

    def summary(self) -> dict[str, Any]:
        counts = np.array(self.per_document or [0])
        return {"window_tokens": self.windower.size, "overlap_tokens": self.windower.overlap,
                "measured_with": self.windower.measured_with, "documents": len(self.per_document),
                "documents_split": int((counts > 1).sum()), "windows": int(counts.sum()),
                "windows_per_document": {"mean": round(float(counts.mean()), 2), "max": int(counts.max())},
                "per_document": self.listed}


def save_arrow(prepared: PreparedData, card: DataCard) -> None:
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
