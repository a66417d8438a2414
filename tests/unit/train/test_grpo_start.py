"""GRPO starts from a run folder: ``model.name_or_path: runs/<name>`` is that run's model, an adapter keeps
training, and a missing run names the command that makes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from resume_helpers import SETTINGS, recipe_for
from safetensors.torch import load_file

from ayar.data.prepare import prepare
from ayar.errors import UsageError
from ayar.models.load import load_adapter_model, load_model, load_tokenizer, resolve_model_name
from ayar.train.engine import train

GRPO = [*(s for s in SETTINGS if not s.startswith(("method.", "train.batch_size", "train.grad_accum", "train.epochs"))),
        "train.batch_size=4", "train.grad_accum=1", "train.max_steps=2", "method.name=grpo",
        "method.num_generations=2", "method.max_completion_length=6", "method.rewards=[{name: length, max_chars: 8}]"]


@pytest.fixture(scope="module")
def start_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run folder whose model is a LoRA adapter (non-zero, so it changes the outputs) on the tiny model."""
    run = tmp_path_factory.mktemp("runs") / "start"
    model = get_peft_model(load_model(str(tiny_model_dir)), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(run / "model")
    load_tokenizer(str(tiny_model_dir)).save_pretrained(run / "model")  # a run's model folder holds its tokenizer
    (run / "recipe.yaml").write_text("task: causal_lm\n", encoding="utf-8")
    return run


def test_a_run_folder_names_its_model_and_loads_merged(start_run: Path, tiny_model_dir: Path) -> None:
    assert resolve_model_name(str(start_run)) == str(start_run / "model")
    ids = torch.tensor([[5, 6, 7, 8]])
    adapted = load_adapter_model(start_run).eval()
    merged = load_model(str(start_run)).eval()  # the start model, as evaluation loads it
    plain = load_model(str(tiny_model_dir)).eval()
    torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(merged(ids).logits, plain(ids).logits, atol=1e-3)


def test_a_missing_run_says_which_command_makes_it(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="make quickstart"):
        resolve_model_name(str(tmp_path / "runs" / "quickstart"))
    with pytest.raises(UsageError, match="run.name is other"):
        resolve_model_name("runs/other")


def test_grpo_from_a_run_keeps_training_its_adapter(start_run: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path, start_run, "grpo", settings=GRPO)
    prepared = prepare(recipe.data, tmp_path / "data", recipe.run.seed, resolve_model_name(str(start_run)))
    result = train(recipe, str(start_run), prepared, recipe.run_dir)
    start = load_file(start_run / "model" / "adapter_model.safetensors")
    after = load_file(result.model_dir / "adapter_model.safetensors")
    assert start.keys() == after.keys()  # the same adapter (q_proj, v_proj, r 4), not a new one
    assert any(not torch.equal(start[k], after[k]) for k in start)
    config = json.loads((result.model_dir / "adapter_config.json").read_text(encoding="utf-8"))
    assert Path(config["base_model_name_or_path"]) == tiny_model_dir  # loads again on the original base


def test_grpos_kl_reference_is_the_start_model_not_the_original_base(start_run: Path, tmp_path: Path) -> None:
    """With beta > 0 the KL term pulls toward the start adapter (TRL's frozen "ref" copy of it), so it is zero
    at the first step; the base with the adapter off would be far from it. The copy is not saved with the run."""
    recipe = recipe_for(tmp_path, start_run, "grpo-kl", "method.beta=0.5", settings=GRPO)
    prepared = prepare(recipe.data, tmp_path / "data", recipe.run.seed, resolve_model_name(str(start_run)))
    result = train(recipe, str(start_run), prepared, recipe.run_dir)
    kl = [h["kl"] for h in result.loss_history if "kl" in h]
    assert len(kl) == 2 and kl[0] == pytest.approx(0.0, abs=1e-6) and kl[1] > 0  # zero until the adapter moves
    assert sorted(p.name for p in result.model_dir.iterdir() if p.is_dir()) == []  # no saved "ref" adapter
    start = load_file(start_run / "model" / "adapter_model.safetensors")
    assert start.keys() == load_file(result.model_dir / "adapter_model.safetensors").keys()
