"""Every shipped recipe runs: `ayar run recipes/<name>.yaml` for two steps on tiny settings.

The recipes are found by glob, so a new recipe is covered the day it is added. Only the overrides
that make a run small are set (steps, records, the from-scratch model's size, evaluation length);
the recipe's method, data shape, model source and template stay as shipped. Recipes that cannot run
on a CPU-only machine without a network are excepted by name, with the reason, in NOT_RUN_HERE.
The runs go through the CLI in this process (the same Typer command `ayar run` calls), so the
libraries are imported once for all recipes rather than once per recipe.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner

from ayar.cli import app
from ayar.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
NOT_RUN_HERE = {
    "hub-distilgpt2-lora": "downloads distilgpt2 from the Hugging Face hub; CI has no network",
    "method-qlora": "needs a CUDA GPU and bitsandbytes (on a CPU it stops at once: see the test below)",
}
# What a recipe's size is cut to; every key exists in the recipe schema, whatever the recipe holds.
TINY = {
    "run.carbon": "false", "train.max_steps": "2", "train.batch_size": "4", "train.grad_accum": "1",
    "train.logging_steps": "1", "eval.max_examples": "4", "eval.max_new_tokens": "4", "eval.batch_size": "4",
    "eval.num_samples": "2", "eval.compare_base": "false", "eval.bootstrap_resamples": "100", "eval.risks.enabled": "false",
    "pretrain.max_steps": "2", "pretrain.batch_size": "4", "pretrain.tokenizer.vocab_size": "512",
    "pretrain.model.hidden_size": "32", "pretrain.model.num_layers": "2", "pretrain.model.intermediate_size": "64",
    "pretrain.model.num_heads": "2",
    # bf16 where the CPU has bf16 units (the same as the recipes' bf16 there); elsewhere bf16 is emulated,
    # and a two-step run of a 135M-parameter model took minutes instead of seconds
    "train.precision": "auto",
}
RECORDS = {"causal_lm": 60, "seq2seq": 60, "classification": 160}  # enough that every split keeps rows


def tiny_overrides(recipe: dict[str, Any], corpus: Path, out: Path) -> list[str]:
    """--set values that make ``recipe`` a two-step run writing into ``out``."""
    values = {**TINY, "run.output_dir": str(out), "pretrain.corpus": str(corpus)}
    synthetic = (recipe.get("data") or {}).get("synthetic")
    if synthetic is not None:
        wanted = RECORDS.get(recipe.get("task", "causal_lm"), 60)
        values["data.synthetic.num_records"] = str(min(synthetic.get("num_records", wanted), wanted))
    if (recipe.get("method") or {}).get("student_layers") is not None:
        values["method.student_layers"] = "2"  # a two-block student: the same code path, less to train
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the pydoc corpus: the from-scratch recipes train their tokenizer on it in a second."""
    from ayar.models.scratch import pydoc_topics_text

    path = tmp_path_factory.mktemp("corpus") / "pydoc.txt"
    path.write_text(pydoc_topics_text()[:60_000], encoding="utf-8")
    return path


def test_exceptions_name_shipped_recipes() -> None:
    assert len(RECIPES) > len(NOT_RUN_HERE)
    assert set(NOT_RUN_HERE) <= {path.stem for path in RECIPES}, "an excepted recipe was renamed or removed"


@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem not in NOT_RUN_HERE], ids=lambda p: p.stem)
def test_recipe_runs(path: Path, small_corpus: Path, tmp_path: Path) -> None:
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    result = CliRunner().invoke(app, ["run", str(path), *tiny_overrides(recipe, small_corpus, tmp_path)])
    assert result.exit_code == 0, f"{path.name}: {result.exception!r}\n{result.output[-3000:]}"
    name = (recipe.get("run") or {}).get("name", "run")
    metrics = json.loads((tmp_path / name / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train"]["steps"] == 2
    assert metrics["eval"], f"{path.name}: no evaluation figures"
    assert any((tmp_path / name / "model").iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the QLoRA recipe could run; this checks the CPU")
def test_qlora_recipe_stops_on_a_cpu_before_loading(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(ROOT / "recipes/method-qlora.yaml"),
                                      "--set", f"run.output_dir={tmp_path}"])
    assert isinstance(result.exception, UsageError), repr(result.exception)
    assert "lora" in str(result.exception)
    assert not (tmp_path / "method-qlora" / "pretrain").exists()  # stopped before any stage
