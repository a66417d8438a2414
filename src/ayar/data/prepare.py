"""The prepare stage: recipe data section in, split JSONL files and a data card out."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ayar.data.split import SPLITS, split_records
from ayar.data.synthetic import generate_records, write_jsonl
from ayar.errors import UsageError
from ayar.recipe import DataConfig

REQUIRED_FIELDS = {
    "alpaca": ("instruction", "output"),
    "messages": ("messages",),
    "sharegpt": ("conversations",),
    "text": ("text",),
    "classification": ("text", "label"),
    "seq2seq": ("source", "target"),
    "preference": ("prompt", "chosen", "rejected"),
}


@dataclass
class PreparedData:
    """Where the prepared splits are, and how many records each holds."""

    root: Path
    counts: dict[str, int] = field(default_factory=dict)

    def split_path(self, split: str) -> Path:
        return self.root / f"{split}.jsonl"

    def read_split(self, split: str) -> list[dict[str, Any]]:
        path = self.split_path(split)
        if not path.is_file():
            raise UsageError(f"prepared split not found: {path} (run `ayar prepare` first)")
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]


def _read_jsonl(path: Path, fmt: str, columns: dict[str, str], strict: bool, rejects: list[dict]) -> list[dict]:
    """Read one JSONL file; malformed lines go to rejects with file and line number.

    ``columns`` maps the shape's field names to the file's column names.
    """
    required = REQUIRED_FIELDS[fmt]
    records = []
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError(f"expected a JSON object, got {type(record).__name__}")
                for shape_field, column in columns.items():
                    if column in record:
                        record[shape_field] = record.pop(column)
                missing = [name for name in required if name not in record]
                if missing:
                    raise ValueError(f"missing field(s) {missing}")
            except (UnicodeDecodeError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
                if strict:
                    raise UsageError(f"{path}:{line_no}: {reason}") from None
                rejects.append({"source": str(path), "line": line_no, "reason": reason})
                continue
            records.append(record)
    return records


def load_records(cfg: DataConfig, seed: int, rejects: list[dict]) -> list[dict[str, Any]]:
    """Records from the synthetic generator or the recipe's input files."""
    if cfg.synthetic is not None:
        syn = cfg.synthetic
        return list(generate_records(syn.num_records, seed, list(syn.languages), list(syn.tasks)))
    if not cfg.inputs:
        raise UsageError("data.inputs is empty and data.synthetic is not set: nothing to prepare")
    records: list[dict[str, Any]] = []
    for source in cfg.inputs:
        path = Path(source.path)
        if not path.is_file():
            raise UsageError(f"data input not found: {path}")
        if path.stat().st_size == 0:
            raise UsageError(f"data input is empty: {path}")
        records += _read_jsonl(path, source.format or cfg.format, source.columns, cfg.strict, rejects)
    return records


def prepare(cfg: DataConfig, out_dir: Path, seed: int) -> PreparedData:
    """Load, split and write the data; records in = kept + rejected, always."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rejects: list[dict] = []
    records = load_records(cfg, seed, rejects)
    if not records:
        raise UsageError("no valid records after loading: see rejects.jsonl")
    fractions = (cfg.split.train, cfg.split.validation, cfg.split.test)
    split_seed = cfg.split.seed if cfg.split.seed is not None else seed
    splits = split_records(records, fractions, split_seed, cfg.split.stratify_by, cfg.split.group_by)
    prepared = PreparedData(out_dir)
    for name in SPLITS:
        prepared.counts[name] = write_jsonl(splits[name], prepared.split_path(name))
    write_jsonl(rejects, out_dir / "rejects.jsonl")
    card = {
        "records_in": len(records) + len(rejects),
        "kept": len(records),
        "rejected": len(rejects),
        "splits": prepared.counts,
    }
    (out_dir / "data_card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    return prepared
