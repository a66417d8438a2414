"""`ayar serve RECIPE|RUN|MODEL` and `ayar monitor drift`: the recipe's sections, command-line flags over them."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import typer

from ayar.errors import UsageError
from ayar.recipe import ServeConfig, dump_recipe, load_recipe
from ayar.serve.__main__ import parser
from ayar.serve.drift import drift_inputs
from ayar.serve.options import option_name
from ayar.serve.server import resolve_target


def write_recipe(tmp_path: Path, *overrides: str) -> Path:
    path = tmp_path / "recipe.yaml"
    recipe = load_recipe(None, ["pretrain.enabled=true", f"run.output_dir={tmp_path / 'runs'}", "run.name=r1",
                                *overrides])
    dump_recipe(recipe, path)
    return path


def test_a_recipe_gives_its_serve_section_and_flags_win(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "serve.port=9123", "serve.max_batch=3", "serve.log_requests=true")
    target = resolve_target(path, {"max_batch": 5, "host": None})
    assert target.config.port == 9123  # from the recipe
    assert target.config.max_batch == 5  # the flag wins
    assert target.config.host == ServeConfig().host and target.config.log_requests  # default; recipe
    assert target.model == target.run_dir == tmp_path / "runs" / "r1"


def test_a_run_folder_reads_its_saved_recipe(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    dump_recipe(load_recipe(None, ["pretrain.enabled=true", "serve.max_queue=7"]), run / "recipe.yaml")
    target = resolve_target(run)
    assert target.config.max_queue == 7 and target.run_dir == run and target.model == run


def test_a_model_folder_gets_the_schema_defaults(tmp_path: Path) -> None:
    target = resolve_target(tmp_path, {"port": 8123})
    assert target.config == ServeConfig(port=8123) and target.run_dir is None and target.model == tmp_path


def test_a_bad_flag_value_names_the_flag(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--port"):
        resolve_target(tmp_path, {"port": 0})


def test_every_serve_setting_is_an_option_of_both_entry_points() -> None:
    """The options are generated from ServeConfig: a new setting needs no edit to either command line."""
    from ayar.cli import app

    flags = {option_name(name) for name in ServeConfig.model_fields}
    argparse_flags = {s for action in parser()._actions for s in action.option_strings}
    assert flags <= argparse_flags
    command = typer.main.get_command(app).commands["serve"]
    typer_flags = {s for param in command.params for s in param.opts}
    assert flags <= typer_flags
    assert set(ServeConfig.model_fields) <= set(inspect.signature(command.callback).parameters)


def test_drift_reads_the_monitor_section_and_the_run_folder(tmp_path: Path) -> None:
    path = write_recipe(tmp_path, "monitor.window=50", "monitor.psi=[0.2, 0.4]")
    inputs = drift_inputs(path, None, None)
    run = tmp_path / "runs" / "r1"
    assert inputs.reference == run / "data" and inputs.db == run / "requests.sqlite"
    assert inputs.thresholds.window == 50 and inputs.thresholds.psi == (0.2, 0.4)
    explicit = drift_inputs(path, tmp_path / "ref", tmp_path / "log.sqlite")
    assert explicit.reference == tmp_path / "ref" and explicit.db == tmp_path / "log.sqlite"
    with pytest.raises(UsageError, match="--reference and --db"):
        drift_inputs(None, tmp_path / "ref", None)
