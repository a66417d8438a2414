"""`ayar generate`: the conversations it builds, with the run's training system prompt or the one given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import ayar.eval.generate
import ayar.models.load
from ayar.cli import app
from ayar.recipe import load_recipe
from ayar.run_folder import RunFolder


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[list[dict[str, Any]]]:
    """The conversations `ayar generate` hands to the model (a stand-in that answers 'ok')."""
    conversations: list[list[dict[str, Any]]] = []

    def answer(model: Any, tokenizer: Any, batch: list[list[dict[str, Any]]], cfg: Any) -> list[str]:
        conversations.extend(batch)
        return ["ok"] * len(batch)

    monkeypatch.setattr(ayar.models.load, "load_for_inference", lambda path: (None, None))
    monkeypatch.setattr(ayar.eval.generate, "generate_chat", answer)
    return conversations


def run_with_system_prompt(root: Path, system_prompt: str | None) -> Path:
    overrides = ["run.name=demo", "model.name_or_path=gpt2"]
    if system_prompt is not None:
        overrides.append(f"data.system_prompt={system_prompt}")
    run = RunFolder(root).create(load_recipe(None, overrides))
    run.model.mkdir()
    (run.model / "config.json").write_text("{}")
    return root


def test_a_run_folder_answers_under_its_training_system_prompt(tmp_path: Path, seen: list) -> None:
    run = run_with_system_prompt(tmp_path / "run", "You solve short language tasks.")
    result = CliRunner().invoke(app, ["generate", str(run), "-p", "kitap", "-p", "kalem"])
    assert result.exit_code == 0, result.output
    assert seen == [[{"role": "system", "content": "You solve short language tasks."},
                     {"role": "user", "content": word}] for word in ("kitap", "kalem")]
    assert "> kitap\nok" in result.output


def test_system_option_wins_and_empty_means_the_template_default(tmp_path: Path, seen: list) -> None:
    run = run_with_system_prompt(tmp_path / "run", "You solve short language tasks.")
    assert CliRunner().invoke(app, ["generate", str(run), "-p", "a", "--system", "Be brief."]).exit_code == 0
    assert CliRunner().invoke(app, ["generate", str(run), "-p", "b", "--system", ""]).exit_code == 0
    assert seen == [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "a"}],
                    [{"role": "user", "content": "b"}]]


def test_a_run_without_a_system_prompt_sends_the_user_turn_alone(tmp_path: Path, seen: list) -> None:
    run = run_with_system_prompt(tmp_path / "run", None)
    assert CliRunner().invoke(app, ["generate", str(run), "-p", "hello"]).exit_code == 0
    assert seen == [[{"role": "user", "content": "hello"}]]
