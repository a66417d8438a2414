"""The prepared data folder: the splits, the rehearsal records beside them, and the data card."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ayar.data.rehearsal import REHEARSAL_FILE
from ayar.errors import UsageError


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
