"""`ayar eval RECIPE --human SHEET`: a filled blind sheet becomes the report's human-evaluation section."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from ayar.eval.human import export_sheet
from ayar.pipeline import stage_human_eval
from ayar.recipe import load_recipe


def test_a_filled_sheet_reaches_metrics_and_the_report(tmp_path: Path) -> None:
    recipe = load_recipe(None, ["pretrain.enabled=true", f"run.output_dir={tmp_path}", "run.name=r"])
    run = recipe.run_dir
    rows = [{"id": i, "prompt": f"p{i}", "reference": "r", "base_output": "bad", "tuned_output": "good"}
            for i in range(4)]
    paths = export_sheet(rows, run / "annotation", seed=1)
    (run / "metrics.json").write_text(json.dumps({"eval": {}}), encoding="utf-8")
    with paths["csv"].open(encoding="utf-8") as f:
        sheet = list(csv.DictReader(f))
    for row in sheet:  # the annotator prefers the tuned model's answer ("good") three times, one tie
        row["preference"] = "tie" if row["item"] == "0004" else ("1" if row["output_1"] == "good" else "2")
    filled = tmp_path / "filled.csv"
    with filled.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(sheet[0]))
        writer.writeheader()
        writer.writerows(sheet)

    result = stage_human_eval(recipe, filled)
    assert result["win"]["count"] == 3 and result["tie"]["count"] == 1 and result["loss"]["count"] == 0
    assert json.loads((run / "metrics.json").read_text())["human"]["annotated"] == 4
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "Human evaluation" in report and "4 blind comparisons of tuned against base" in report
