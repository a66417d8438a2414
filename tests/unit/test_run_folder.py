"""The run folder type: its layout, metrics I/O with the format version, and folders older or newer than it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.export import find_model_dir
from ayar.recipe import load_recipe
from ayar.run_folder import FORMAT_VERSION, RunFolder


def test_create_writes_the_recipe_and_the_format_version(tmp_path: Path) -> None:
    run = RunFolder(tmp_path / "runs" / "demo").create(load_recipe(None, ["run.name=demo", "model.name_or_path=gpt2"]))
    assert run.is_run() and load_recipe(run.recipe_file).run.name == "demo"
    assert json.loads(run.info_file.read_text())["format_version"] == FORMAT_VERSION == run.format_version()
    assert run.model == run.root / "model" and run.prepared.root == run.data == run.root / "data"
    assert RunFolder.of_model(run.model) == run and RunFolder.of_model(run.data) is None


def test_metrics_merge_by_section_with_the_version_and_no_nan(tmp_path: Path) -> None:
    run = RunFolder(tmp_path)
    assert run.read_metrics() == {}
    run.update_metrics("train", {"final_loss": float("nan"), "steps": 3})
    metrics = run.update_metrics("eval", {"tuned": {"exact_match": 0.5}})
    assert metrics == json.loads(run.metrics_file.read_text())  # strict JSON: NaN written as null
    assert metrics["train"] == {"final_loss": None, "steps": 3} and metrics["format_version"] == FORMAT_VERSION


def test_a_folder_from_before_versions_opens_and_a_newer_one_is_refused(tmp_path: Path) -> None:
    old = RunFolder(tmp_path / "old")
    old.root.mkdir()
    old.recipe_file.write_text("run: {name: old}\n")  # no run.json: the layout versions were first written for
    assert RunFolder.open(old.root).format_version() == 1
    newer = RunFolder(tmp_path / "newer")
    newer.root.mkdir()
    newer.recipe_file.write_text("run: {name: newer}\n")
    newer.info_file.write_text(json.dumps({"format_version": FORMAT_VERSION + 1}))
    with pytest.raises(UsageError, match=r"format version \d+, newer than this ayar reads.*re-run the recipe"):
        RunFolder.open(newer.root)
    (newer.model).mkdir()
    (newer.model / "config.json").write_text("{}")
    with pytest.raises(UsageError, match="newer than this ayar reads"):
        find_model_dir(newer.root)  # export (and what loads a run's model through it) says so too
    with pytest.raises(UsageError, match="not an ayar run folder"):
        RunFolder.open(tmp_path / "nothing")
