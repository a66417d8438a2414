"""The sweep section is checked as it loads: bad keys, ranges and objectives are usage errors (exit 2)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from sweep_helpers import sweep_sets

from ayar import cli
from ayar.errors import UsageError
from ayar.recipe import SearchRange, load_recipe


def test_ranges_and_choices_load_typed(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, "sweep.space={method.r: {low: 2, high: 8}, "
                                          "train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}, "
                                          "train.scheduler: [linear, cosine]}"))
    space = recipe.sweep.space
    assert isinstance(space["method.r"], SearchRange) and space["method.r"].is_int
    assert not space["train.learning_rate"].is_int and space["train.learning_rate"].log
    assert space["train.scheduler"] == ["linear", "cosine"]
    assert recipe.sweep.directions() == ["minimize"]


@pytest.mark.parametrize(("override", "message"), [
    ("sweep.space={train.learning_rate: {low: 0.1, high: 0.01}}", "must be below high"),
    ("sweep.space={train.learning_rate: {low: 0, high: 0.01, log: true}}", "low above 0"),
    ("sweep.space={train.learning_rate: {low: 1.0e-4, hgh: 0.01}}", "'train.learning_rate'"),
    ("sweep.space={run.name: [a, b]}", "set by the sweep itself"),
    ("sweep.objective=test.loss", "not a validation figure"),
    ("sweep.objective=eval.tuned.exact_match", "name sweep.direction"),
    ("sweep.objective=[eval.tuned.exact_match, forgetting.answers.greedy.lost_share]", "2 objectives but 1"),
    ("sweep.pruner=median", None),  # allowed with one objective
    ("sweep.sampler=grid", "grid sampler needs lists"),
])
def test_bad_sweep_settings_name_the_key(tiny_model_dir: Path, tmp_path: Path, override: str,
                                         message: str | None) -> None:
    extra = [override, "sweep.direction=maximize"] if "2 objectives" in (message or "") else [override]
    if message is None:
        assert load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, *extra)).sweep.pruner == "median"
        return
    with pytest.raises(UsageError, match="sweep") as caught:
        load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, *extra))
    assert message in str(caught.value)


def test_a_pruner_needs_a_single_objective(tiny_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="single objective"):
        load_recipe(None, sweep_sets(tiny_model_dir, tmp_path, "sweep.pruner=median", "sweep.objective=[eval.tuned."
                                     "exact_match, forgetting.answers.greedy.lost_share]",
                                     "sweep.direction=[maximize, minimize]"))


@pytest.mark.parametrize(("space", "said"), [
    ("{train.learnig_rate: {low: 1.0e-4, high: 1.0e-2}}", "unknown recipe key 'train.learnig_rate' (did you mean "
                                                          "'train.learning_rate'?)"),
    ("{method.rank: [2, 4]}", "unknown recipe key 'method.rank'"),
    ("{train.scheduler: [bogus, linear]}", "sweep.space 'train.scheduler'"),
])
def test_the_command_refuses_bad_space_keys_with_exit_2(tiny_model_dir: Path, tmp_path: Path, space: str,
                                                        said: str, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    sets = [arg for s in sweep_sets(tiny_model_dir, tmp_path, f"sweep.space={space}") for arg in ("--set", s)]
    monkeypatch.setattr(sys, "argv", ["ayar", "sweep", str(tmp_path / "none.yaml"), *sets])
    (tmp_path / "none.yaml").write_text("{}\n", encoding="utf-8")
    with pytest.raises(SystemExit) as caught:
        cli.main()
    assert caught.value.code == 2
    assert said in capsys.readouterr().err
    assert not (tmp_path / "s" / "trials").exists()  # refused before any trial
