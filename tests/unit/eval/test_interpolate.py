"""train.interpolate (WiSE-FT): the saved adapter or weights carry alpha so every reader applies it, alpha 0
is the base, the chooser keeps the task and takes the least forgetting, and a run writes its choice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ayar.eval.interpolate import choose
from ayar.models.interpolate import INTERPOLATION_FILE, interpolate_state, scale_adapter
from ayar.models.load import load_for_inference, load_model, load_tokenizer
from ayar.recipe import load_recipe


@pytest.fixture
def adapter(chatml_model_dir: Path, tmp_path: Path) -> Path:
    """A LoRA adapter with random (non-zero) B matrices: a stand-in for a fine-tune."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(load_model(str(chatml_model_dir)),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False,
                                      alpha_pattern={"v_proj": 16}))
    model.save_pretrained(tmp_path / "adapter")
    load_tokenizer(str(chatml_model_dir)).save_pretrained(tmp_path / "adapter")  # as ayar saves a run's model
    return tmp_path / "adapter"


def _merged_delta(adapter: Path, base: Path) -> dict[str, torch.Tensor]:
    merged = load_for_inference(adapter)[0].merge_and_unload().state_dict()
    start = load_model(str(base)).state_dict()
    return {k: merged[k] - start[k] for k in start if k in merged and "proj" in k}


def test_a_scaled_adapter_moves_the_weights_by_alpha_in_plain_peft(adapter: Path, chatml_model_dir: Path) -> None:
    full = _merged_delta(adapter, chatml_model_dir)
    assert any(d.abs().max() > 0 for d in full.values())
    config = scale_adapter(adapter, 0.4)
    assert config["lora_alpha"] == pytest.approx(3.2) and config["alpha_pattern"] == {"v_proj": pytest.approx(6.4)}
    scale_adapter(adapter, 0.5)  # relative to the trained adapter, not to the last scaling
    assert json.loads((adapter / INTERPOLATION_FILE).read_text())["alpha"] == 0.5
    half = _merged_delta(adapter, chatml_model_dir)  # peft itself reads the folder
    for name, delta in full.items():
        assert torch.allclose(half[name], 0.5 * delta, atol=1e-6), name


def test_alpha_zero_is_the_base_model(adapter: Path, chatml_model_dir: Path) -> None:
    scale_adapter(adapter, 0.0)
    tuned, base = load_for_inference(adapter)[0].eval(), load_model(str(chatml_model_dir)).eval()
    ids = torch.tensor([[5, 9, 14, 3, 7]])
    with torch.no_grad():
        assert torch.equal(tuned(ids).logits, base(ids).logits)


def test_full_weights_interpolate_tensor_by_tensor() -> None:
    base = {"w": torch.zeros(3), "ids": torch.tensor([1, 2])}
    tuned = {"w": torch.tensor([1.0, 2.0, 4.0]), "ids": torch.tensor([5, 6]), "new": torch.ones(2)}
    out = interpolate_state(base, tuned, 0.25)
    assert out["w"].tolist() == [0.25, 0.5, 1.0] and out["ids"].tolist() == [5, 6] and out["new"].tolist() == [1, 1]


def _row(alpha: float, task: float, general: float) -> dict:
    return {"alpha": alpha, "task_nll": task, "general_nll": general, "text_nll": {"en": general, "tr": general}}


def test_the_chooser_keeps_the_task_and_takes_the_least_forgetting() -> None:
    rows = [_row(0.0, 3.0, 1.0), _row(1.0, 1.0, 2.0), _row(0.8, 1.1, 1.6), _row(0.6, 1.15, 1.3), _row(0.4, 1.6, 1.1)]
    chosen = choose(rows, keep=0.9)  # improvement 2.0: 0.6 keeps 92.5%, 0.4 keeps 70%
    assert chosen["alpha"] == 0.6 and chosen["task_kept"] == pytest.approx(0.925)
    assert chosen["general_nll_increase"] == pytest.approx(0.3)
    assert choose(rows, keep=0.99)["alpha"] == 1.0  # only the fine-tune itself keeps 99%


def test_a_run_chooses_alpha_on_validation_and_saves_it(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ayar.pipeline import stage_prepare, stage_train

    recipe = load_recipe(None, [
        f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=wise", "run.carbon=false",
        "data.synthetic.num_records=160", "data.synthetic.tasks=[upper]", "data.template=chatml",
        "data.split={train: 0.7, validation: 0.2, test: 0.1}", "method.name=lora", "train.max_steps=30",
        "train.batch_size=8", "train.learning_rate=1e-2", "train.precision=fp32", "train.eval_steps=0",
        "train.report_to=[]", "train.interpolate.alpha=auto", "train.interpolate.grid=[1.0, 0.7, 0.4]",
        "train.interpolate.examples=16", "train.interpolate.questions=8", "train.interpolate.text_tokens=64",
        "eval.forgetting.max_new_tokens=4"])
    stage_prepare(recipe)
    stage_train(recipe)
    figures = json.loads((recipe.run_dir / "metrics.json").read_text())["interpolate"]
    rows = {r["alpha"]: r for r in figures["candidates"]}
    assert set(rows) == {0.0, 1.0, 0.7, 0.4} and figures["chosen"] == "auto"
    assert rows[1.0]["task_nll"] < rows[0.0]["task_nll"]  # the fine-tune learned its task...
    # ...and moving back toward the base undoes its drift on general material, step by step
    drift = [abs(rows[a]["general_nll_increase"]) for a in (0.4, 0.7, 1.0)]
    assert rows[0.0]["general_nll_increase"] == 0 and drift == sorted(drift) and drift[0] < drift[-1]
    saved = json.loads((recipe.run_dir / "model" / INTERPOLATION_FILE).read_text())
    assert saved["alpha"] == figures["alpha"] and rows[figures["alpha"]]["task_kept"] >= 0.9
    assert load_file(str(recipe.run_dir / "model" / "adapter_model.safetensors"))  # the weights are untouched
