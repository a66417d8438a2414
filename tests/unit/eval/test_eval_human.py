"""Blind annotation sheet: export, fill, import."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.eval.human import export_sheet, import_sheet


def _rows(n: int) -> list[dict]:
    return [{"id": f"r{i}", "prompt": f"soru {i}", "reference": f"cevap {i}", "base_output": f"base {i}",
             "tuned_output": f"tuned {i}"} for i in range(n)]


def test_round_trip_counts_tuned_wins(tmp_path: Path) -> None:
    paths = export_sheet(_rows(20), tmp_path, seed=3)
    with paths["csv"].open(encoding="utf-8", newline="") as f:
        sheet = list(csv.DictReader(f))
    assert set(sheet[0]) == {"item", "prompt", "reference", "output_1", "output_2", "preference", "comment"}
    positions = {row["output_1"].split()[0] for row in sheet}
    assert positions == {"base", "tuned"}  # the order really is shuffled
    # the annotator prefers the tuned output in 12 items, calls 4 ties, prefers base in 2, leaves 2 blank
    for index, row in enumerate(sheet):
        tuned_slot = "1" if row["output_1"].startswith("tuned") else "2"
        base_slot = "2" if tuned_slot == "1" else "1"
        row["preference"] = tuned_slot if index < 12 else "tie" if index < 16 else base_slot if index < 18 else ""
    filled = tmp_path / "filled.csv"
    with filled.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sheet[0]))
        writer.writeheader()
        writer.writerows(sheet)
    result = import_sheet(filled, paths["key"])
    assert (result["win"]["count"], result["tie"]["count"], result["loss"]["count"]) == (12, 4, 2)
    assert result["unannotated"] == 2
    assert result["win"]["rate"] == pytest.approx(12 / 18)
    assert result["win"]["ci_low"] < 12 / 18 < result["win"]["ci_high"]
    assert result["win"]["ci_low"] > 0.4 and result["win"]["ci_high"] < 0.9


def test_jsonl_sheet_imports_too(tmp_path: Path) -> None:
    paths = export_sheet(_rows(3), tmp_path, seed=0)
    rows = [json.loads(line) for line in paths["jsonl"].read_text(encoding="utf-8").splitlines()]
    for row in rows:
        row["preference"] = "tie"
    filled = tmp_path / "filled.jsonl"
    filled.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    assert import_sheet(filled, paths["key"])["tie"]["rate"] == 1.0


def test_bad_preference_names_the_row(tmp_path: Path) -> None:
    paths = export_sheet(_rows(2), tmp_path, seed=0)
    rows = [json.loads(line) for line in paths["jsonl"].read_text(encoding="utf-8").splitlines()]
    rows[1]["preference"] = "maybe"
    filled = tmp_path / "filled.jsonl"
    filled.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with pytest.raises(UsageError, match="row 2"):
        import_sheet(filled, paths["key"])
