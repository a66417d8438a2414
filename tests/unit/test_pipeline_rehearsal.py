"""`ayar prepare` writes the rehearsal set beside the splits, and removes a stale one when the recipe drops it."""

from __future__ import annotations

import json
from pathlib import Path

from ayar.pipeline import stage_prepare
from ayar.recipe import load_recipe


def test_prepare_writes_then_removes_the_rehearsal_set(tiny_model_dir: Path, tmp_path: Path) -> None:
    answers = tmp_path / "answers.jsonl"  # answers written beforehand: prepare generates nothing
    answers.write_text(json.dumps({"instruction": "Say hi.", "output": "Hi!"}) + "\n", encoding="utf-8")
    sets = [f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=r",
            "data.synthetic.num_records=40", "data.template=alpaca"]
    prepared = stage_prepare(load_recipe(None, [*sets, f"data.rehearsal.prompts={answers}", "data.rehearsal.share=0.2"]))
    rows = prepared.read_rehearsal()
    train = prepared.counts["train"]
    assert rows and {r["output"] for r in rows} == {"Hi!"}
    assert len(rows) / (len(rows) + train) >= 0.2 > (len(rows) - 1) / (len(rows) - 1 + train)
    card = json.loads((prepared.root / "data_card.json").read_text(encoding="utf-8"))
    assert card["rehearsal"]["answers_from_file"] == 1 and card["splits"]["train"] == train  # splits unchanged

    prepared = stage_prepare(load_recipe(None, sets))
    assert prepared.read_rehearsal() is None
