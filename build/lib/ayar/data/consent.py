"""Consent: drop records whose consent field is false, and records whose id is in an opt-out file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ayar.errors import UsageError
from ayar.recipe import ConsentConfig

NO_CONSENT = {"false", "no", "0", "n", "hayır", "hayir", "yok", "off"}


def load_opt_out(path: Path) -> set[str]:
    """Record ids from a file, one per line (blank lines and lines starting with '#' skipped)."""
    if not path.is_file():
        raise UsageError(f"data.consent.opt_out_file not found: {path}")
    with path.open(encoding="utf-8") as f:
        return {line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")}


def withheld(value: Any) -> bool:
    """True when a consent value says no (false, 0, 'no', 'hayır'...); a missing value is not a no."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value == 0
    return isinstance(value, str) and value.strip().lower() in NO_CONSENT


class ConsentFilter:
    """Says why a record may not be used ('no_consent', 'opted_out') or None."""

    def __init__(self, cfg: ConsentConfig) -> None:
        self.cfg = cfg
        self.opt_out = load_opt_out(cfg.opt_out_file) if cfg.opt_out_file else set()

    def reason(self, record: dict[str, Any]) -> str | None:
        if withheld(record.get(self.cfg.field)):
            return "no_consent"
        if self.opt_out and str(record.get(self.cfg.id_field)) in self.opt_out:
            return "opted_out"
        return None
