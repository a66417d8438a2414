"""Human evaluation: a blind annotation sheet out, the filled sheet in, win/tie/loss rates back.

The sheet shows each prompt, its reference and two outputs in a seeded random order; which model
wrote which output is kept in a separate key file that annotators never see.
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from ayar.errors import UsageError

SHEET_FIELDS = ("item", "prompt", "reference", "output_1", "output_2", "preference", "comment")
CHOICES = {"1": "1", "2": "2", "tie": "tie", "t": "tie", "=": "tie", "berabere": "tie"}


def export_sheet(rows: list[dict[str, Any]], out_dir: Path, names: tuple[str, str] = ("base", "tuned"),
                 seed: int = 0) -> dict[str, Path]:
    """Write annotation.csv, annotation.jsonl and the hidden annotation_key.json; rows need both outputs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sheet, key = [], {"names": list(names), "items": {}}
    for index, row in enumerate(rows):
        outputs = [(names[0], row[f"{names[0]}_output"]), (names[1], row[f"{names[1]}_output"])]
        rng.shuffle(outputs)
        item = f"{index + 1:04d}"
        sheet.append({"item": item, "prompt": row.get("prompt", ""), "reference": row.get("reference", ""),
                      "output_1": outputs[0][1], "output_2": outputs[1][1], "preference": "", "comment": ""})
        key["items"][item] = {"1": outputs[0][0], "2": outputs[1][0], "id": row.get("id")}
    paths = {"csv": out_dir / "annotation.csv", "jsonl": out_dir / "annotation.jsonl",
             "key": out_dir / "annotation_key.json"}
    with paths["csv"].open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SHEET_FIELDS)
        writer.writeheader()
        writer.writerows(sheet)
    paths["jsonl"].write_text("".join(json.dumps(s, ensure_ascii=False) + "\n" for s in sheet), encoding="utf-8")
    paths["key"].write_text(json.dumps(key, indent=1, ensure_ascii=False), encoding="utf-8")
    return paths


def read_sheet(path: Path) -> list[dict[str, Any]]:
    """A filled sheet, CSV or JSONL."""
    if not path.is_file():
        raise UsageError(f"annotation sheet not found: {path}")
    if path.suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as f:
            return list(csv.DictReader(f))
    try:
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except json.JSONDecodeError as exc:
        raise UsageError(f"annotation sheet {path} is not JSONL: line {exc.lineno}") from None


def _rate(count: int, total: int, confidence: float) -> dict[str, float]:
    """A proportion with its Wilson score interval (scipy)."""
    from scipy.stats import binomtest

    if total == 0:
        return {"count": count, "rate": float("nan"), "ci_low": float("nan"), "ci_high": float("nan")}
    ci = binomtest(count, total).proportion_ci(confidence_level=confidence, method="wilson")
    return {"count": count, "rate": count / total, "ci_low": float(ci.low), "ci_high": float(ci.high)}


def import_sheet(sheet_path: Path, key_path: Path, confidence: float = 0.95) -> dict[str, Any]:
    """Win/tie/loss of the second model against the first, from a filled sheet and its key."""
    if not key_path.is_file():
        raise UsageError(f"annotation key not found: {key_path}")
    key = json.loads(key_path.read_text(encoding="utf-8"))
    first, second = key["names"]
    wins = ties = losses = blank = 0
    for line, row in enumerate(read_sheet(sheet_path), start=1):
        item = str(row.get("item", "")).zfill(4)
        if item not in key["items"]:
            raise UsageError(f"{sheet_path} row {line}: item '{row.get('item')}' is not in the key {key_path}")
        raw = str(row.get("preference") or "").strip().lower()
        if not raw:
            blank += 1
            continue
        if raw not in CHOICES:
            raise UsageError(f"{sheet_path} row {line}: preference '{raw}' must be 1, 2 or tie")
        choice = CHOICES[raw]
        if choice == "tie":
            ties += 1
        elif key["items"][item][choice] == second:
            wins += 1
        else:
            losses += 1
    judged = wins + ties + losses
    return {"a": first, "b": second, "annotated": judged, "unannotated": blank, "confidence": confidence,
            "win": _rate(wins, judged, confidence), "tie": _rate(ties, judged, confidence),
            "loss": _rate(losses, judged, confidence)}
