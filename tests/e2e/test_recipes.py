"""Every shipped recipe runs: `ayar run recipes/<name>.yaml` for two steps on tiny settings.

The recipes are found by glob, so a new recipe is covered the day it is added. The overrides only
shrink sizes (steps, records, the from-scratch model's size, generation lengths, probe sizes); every
stage a recipe enables stays on (base comparison, risk probes, forgetting, carbon, self-distillation,
rehearsal), so a stage that fails on some recipe's data shape fails here. The recipe's method, data
shape, model source and template stay as shipped. Recipes that cannot run on a CPU-only machine without
a network are excepted by name, with the reason, in NOT_RUN_HERE.
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
from ayar.recipe import Recipe, load_recipe
from ayar.tasks import get_task

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
NOT_RUN_HERE = {
    "hub-distilgpt2-lora": "downloads distilgpt2 from the Hugging Face hub; CI has no network",
    "method-qlora": "needs a CUDA GPU and bitsandbytes (on a CPU it stops at once: see the test below)",
}
# What a recipe's size is cut to; every key exists in the recipe schema, whatever the recipe holds. Sizes only:
# no key here switches a stage off (a stage left out of these runs is a stage whose failures go unseen).
TINY = {
    "train.max_steps": "2", "train.batch_size": "2", "train.grad_accum": "1", "train.logging_steps": "1",
    "train.self_distill.batch_size": "2", "train.self_distill.max_length": "16",
    "train.interpolate.examples": "2", "train.interpolate.questions": "2", "train.interpolate.text_tokens": "16",
    "eval.max_examples": "3", "eval.max_new_tokens": "2", "eval.batch_size": "16", "eval.num_samples": "2",
    "eval.bootstrap_resamples": "100", "eval.judge.max_examples": "2",
    "eval.risks.max_new_tokens": "2", "eval.risks.memorization_records": "2",
    "eval.forgetting.max_questions": "2", "eval.forgetting.text_tokens": "16", "eval.forgetting.window": "16",
    "eval.forgetting.max_new_tokens": "2",
    "pretrain.max_steps": "2", "pretrain.batch_size": "4", "pretrain.tokenizer.vocab_size": "512",
    "pretrain.model.hidden_size": "32", "pretrain.model.num_layers": "2", "pretrain.model.intermediate_size": "64",
    "pretrain.model.num_heads": "2",
    # bf16 where the CPU has bf16 units (the same as the recipes' bf16 there); elsewhere bf16 is emulated,
    # and a two-step run of a 135M-parameter model took minutes instead of seconds
    "train.precision": "auto",
}
# Sizes inside sections a recipe may leave out: set only where the recipe has the section, since setting
# one would switch the section on.
TINY_IF_PRESENT = {
    "data.rehearsal": {"max_prompts": "2", "max_new_tokens": "2", "batch_size": "2"},
}
RECORDS = {"causal_lm": 60, "seq2seq": 60, "classification": 160}  # enough that every split keeps rows


def tiny_overrides(recipe: dict[str, Any], corpus: Path, out: Path) -> list[str]:
    """--set values that make ``recipe`` a two-step run writing into ``out``, every stage it enables still on."""
    values = {**TINY, "run.output_dir": str(out), "pretrain.corpus": str(corpus)}
    synthetic = (recipe.get("data") or {}).get("synthetic")
    if synthetic is not None:
        wanted = RECORDS.get(recipe.get("task", "causal_lm"), 60)
        values["data.synthetic.num_records"] = str(min(synthetic.get("num_records", wanted), wanted))
    for section, sizes in TINY_IF_PRESENT.items():
        first, second = section.split(".")
        if (recipe.get(first) or {}).get(second) is not None:
            values |= {f"{section}.{key}": value for key, value in sizes.items()}
    if (recipe.get("method") or {}).get("student_layers") is not None:
        values["method.student_layers"] = "2"  # a two-block student: the same code path, less to train
    if (recipe.get("method") or {}).get("num_generations") is not None:
        values["method.num_generations"] = "2"  # GRPO: one prompt's two answers fill the tiny batch of 2
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={value}")]


def test_overrides_only_shrink() -> None:
    """No override turns a stage off: no ``enabled``/``compare_base``/``carbon`` key and no false value."""
    recipe = {"data": {"synthetic": {"num_records": 600}, "rehearsal": {}}, "method": {"student_layers": [0, 2]}}
    args = tiny_overrides(recipe, Path("corpus.txt"), Path("out"))
    keys = {arg.split("=", 1)[0] for arg in args[1::2]}
    values = {arg.split("=", 1)[1] for arg in args[1::2]}
    assert not {k for k in keys if k.rsplit(".", 1)[-1] in ("enabled", "compare_base", "carbon", "annotation_sheet")}
    assert "false" not in values and "0" not in values
    assert {"data.rehearsal.max_prompts", "data.synthetic.num_records", "method.student_layers"} <= keys
    assert not any(k.startswith("data.rehearsal.") for k in tiny_overrides({}, Path("c"), Path("o"))[1::2])


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A slice of the pydoc corpus: the from-scratch recipes train their tokenizer on it in a second."""
    from ayar.models.scratch import pydoc_topics_text

    path = tmp_path_factory.mktemp("corpus") / "pydoc.txt"
    path.write_text(pydoc_topics_text()[:60_000], encoding="utf-8")
    return path


@pytest.fixture
def small_probe_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bias and security probes' prompt sets have no size key in the recipe schema: cut them here to one
    sentence template and one term pair per bias category and language (60 pairs -> 8), and one harmful and
    one injection prompt per language (14 -> 4). A size only: every category, kind and language is probed."""
    from ayar.eval.risks import bias, security

    monkeypatch.setattr(bias, "BIAS_TEMPLATES", {lang: templates[:1] for lang, templates in bias.BIAS_TEMPLATES.items()})
    monkeypatch.setattr(bias, "BIAS_PAIRS", {lang: {category: pairs[:1] for category, pairs in categories.items()}
                                             for lang, categories in bias.BIAS_PAIRS.items()})
    for name in ("HARMFUL_PROMPTS", "INJECTION_PROMPTS"):
        monkeypatch.setattr(security, name, {lang: texts[:1] for lang, texts in getattr(security, name).items()})


def test_exceptions_name_shipped_recipes() -> None:
    assert len(RECIPES) > len(NOT_RUN_HERE)
    assert set(NOT_RUN_HERE) <= {path.stem for path in RECIPES}, "an excepted recipe was renamed or removed"


def start_run(recipe: dict[str, Any], corpus: Path, out: Path) -> list[str]:
    """A recipe that starts from another's run (``model.name_or_path: runs/<name>``, e.g. GRPO from the
    quickstart) gets that run first, made by the shipped recipe of that name on the same tiny settings."""
    start = str((recipe.get("model") or {}).get("name_or_path") or "")
    if not start.startswith("runs/"):
        return []
    name = start.removeprefix("runs/")
    first = ROOT / "recipes" / f"{name}.yaml"
    first_recipe = yaml.safe_load(first.read_text(encoding="utf-8"))
    result = CliRunner().invoke(app, ["run", str(first), *tiny_overrides(first_recipe, corpus, out / "start")])
    assert result.exit_code == 0, f"the start run {first.name}: {result.exception!r}\n{result.output[-2000:]}"
    return ["--set", f"model.name_or_path={out / 'start' / first_recipe['run']['name']}"]


@pytest.mark.parametrize("path", [p for p in RECIPES if p.stem not in NOT_RUN_HERE], ids=lambda p: p.stem)
def test_recipe_runs(path: Path, small_corpus: Path, tmp_path: Path, small_probe_sets: None) -> None:
    recipe = yaml.safe_load(path.read_text(encoding="utf-8"))
    result = CliRunner().invoke(app, ["run", str(path), *tiny_overrides(recipe, small_corpus, tmp_path),
                                      *start_run(recipe, small_corpus, tmp_path)])
    assert result.exit_code == 0, f"{path.name}: {result.exception!r}\n{result.output[-3000:]}"
    name = (recipe.get("run") or {}).get("name", "run")
    metrics = json.loads((tmp_path / name / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train"]["steps"] == 2
    assert metrics["eval"], f"{path.name}: no evaluation figures"
    assert any((tmp_path / name / "model").iterdir())
    assert stages_run(metrics) >= stages_enabled(load_recipe(path)), f"{path.name}: a stage it enables did not run"


def stages_enabled(recipe: Recipe) -> set[str]:
    """The stages a recipe turns on whose figures land in metrics.json."""
    task = get_task(recipe.task)
    compared = recipe.eval.compare_base and not task.label_map  # a classifier's base has an untrained head
    stages = {"carbon"} if recipe.run.carbon else set()
    stages |= {"comparison"} if compared else set()
    stages |= {"risks"} if recipe.eval.risks.enabled else set()
    stages |= {"forgetting"} if compared and recipe.eval.forgetting.enabled and task.chat else set()
    return stages


def stages_run(metrics: dict[str, Any]) -> set[str]:
    """The stages whose figures metrics.json holds."""
    stages = {key for key in ("comparison", "risks") if metrics["eval"].get(key)}
    stages |= {"forgetting"} if metrics.get("forgetting") else set()
    carbon = metrics.get("carbon") or {}
    return stages | ({"carbon"} if carbon.get("train", {}).get("enabled") else set())


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the QLoRA recipe could run; this checks the CPU")
def test_qlora_recipe_stops_on_a_cpu_before_loading(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["run", str(ROOT / "recipes/method-qlora.yaml"),
                                      "--set", f"run.output_dir={tmp_path}"])
    assert isinstance(result.exception, UsageError), repr(result.exception)
    assert "lora" in str(result.exception)
    assert not (tmp_path / "method-qlora" / "pretrain").exists()  # stopped before any stage
