"""`ayar run` ends with the export the recipe's export section asks for (off by default)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ayar import pipeline
from ayar.recipe import load_recipe


@pytest.fixture
def trained_run(tmp_path: Path, tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch):
    """run_all with its training stages replaced by a finished run folder (a tiny model, metrics.json)."""

    def finished(recipe, *args, **kwargs):
        run = recipe.run_dir
        if not (run / "model").exists():
            shutil.copytree(tiny_model_dir, run / "model")
        (run / "metrics.json").write_text(json.dumps({"eval": {}}), encoding="utf-8")

    for stage in ("stage_pretrain", "stage_prepare", "stage_train", "stage_eval"):
        monkeypatch.setattr(pipeline, stage, finished)
    return lambda *sets: load_recipe(None, ["pretrain.enabled=true", f"run.output_dir={tmp_path}", "run.name=r",
                                            "method.name=full", *sets])


def test_run_exports_when_the_recipe_asks(trained_run) -> None:
    recipe = trained_run("export.enabled=true", "export.format=hf")
    pipeline.run_all(recipe)
    out = recipe.run_dir / "export" / "hf"
    assert (out / "config.json").is_file() and list(out.glob("*.safetensors"))


def test_run_does_not_export_by_default(trained_run) -> None:
    recipe = trained_run()
    pipeline.run_all(recipe)
    assert recipe.run_dir.is_dir() and not (recipe.run_dir / "export").exists()
