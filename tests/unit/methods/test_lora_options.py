"""rsLoRA, PiSSA/OLoRA initialisation and LoRA+ as lora's recipe keys: each option's effect on the model,
the saved adapter or the optimizer."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from method_helpers import run_steps, tiny_batch, tiny_model
from peft import PeftModel
from trainer_helpers import train_tiny
from transformers import TrainingArguments

from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.base import method_optimizer
from ayar.methods.lora import LoraParams, lora_config

R, ALPHA = 4, 8


def lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    return [m for m in model.modules() if hasattr(m, "lora_A") and "default" in m.lora_A]


def logits(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("rslora", [True, False])
def test_rslora_scales_the_update_by_alpha_over_sqrt_r(rslora: bool) -> None:
    model = build_method("lora", {"r": R, "alpha": ALPHA, "use_rslora": rslora}).prepare_model(
        tiny_model("llama"), "causal_lm")
    layer = lora_layers(model)[0]
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 0.5)  # a trained adapter: the update is no longer zero
        x = torch.randn(3, layer.in_features)
        update = layer(x) - layer.get_base_layer()(x)
        product = layer.lora_B["default"](layer.lora_A["default"](x))
    expected_scale = ALPHA / math.sqrt(R) if rslora else ALPHA / R
    torch.testing.assert_close(update, expected_scale * product, rtol=1e-5, atol=1e-6)


def test_dora_and_qlora_take_the_lora_options() -> None:
    options = {"use_rslora": True, "loraplus_lr_ratio": 16, "init_lora_weights": "gaussian"}
    assert build_method("dora", options).params.use_rslora is True
    assert build_method("qlora", options).params.loraplus_lr_ratio == 16


@pytest.mark.parametrize("init", ["pissa", "pissa_niter_4", "olora", "gaussian", True])
def test_every_initialisation_starts_from_the_base_models_outputs(init: bool | str) -> None:
    base = tiny_model("llama")
    original = copy.deepcopy(base)
    batch = tiny_batch("llama")
    model = build_method("lora", {"r": R, "alpha": ALPHA, "init_lora_weights": init}).prepare_model(base, "causal_lm")
    torch.testing.assert_close(logits(model, batch), logits(original, batch), rtol=1e-4, atol=1e-4)
    layer = lora_layers(model)[0]
    moved_base = not torch.equal(layer.get_base_layer().weight, original.model.layers[0].self_attn.q_proj.weight)
    # PiSSA and OLoRA hold the principal part in the adapter and take it out of the base; the others start at B = 0
    assert moved_base == (init not in ("gaussian", True))
    assert bool(layer.lora_B["default"].weight.abs().sum() > 0) == moved_base


@pytest.mark.parametrize("init", ["pissa", "olora"])
def test_the_saved_adapter_on_the_original_base_is_the_trained_model(init: str, tmp_path: Path) -> None:
    base = tiny_model("llama")
    original = copy.deepcopy(base)
    batch = tiny_batch("llama")
    method = build_method("lora", {"r": R, "alpha": ALPHA, "init_lora_weights": init})
    model = method.prepare_model(base, "causal_lm")
    model.save_pretrained(str(tmp_path / "checkpoint"))  # during training: the adapter as it is (resumable)
    trainer = train_tiny(model, method, batch, tmp_path / "run", max_steps=3, batch_size=4, callbacks=[])
    trained = logits(trainer.model, batch)
    assert (trained - logits(original, batch)).abs().max() > 1e-2, "training did not change the model"
    method.save_model(trainer.model, tmp_path / "model")  # as the run's final save does (SupervisedRun.write_model)
    saved = json.loads((tmp_path / "model" / "adapter_config.json").read_text())
    assert (saved["r"], saved["init_lora_weights"]) == (2 * R, True)  # a plain LoRA: [A | A0], [B | -B0]
    checkpoint = json.loads((tmp_path / "checkpoint" / "adapter_config.json").read_text())
    assert (checkpoint["r"], checkpoint["init_lora_weights"]) == (R, init)
    loaded = PeftModel.from_pretrained(original, str(tmp_path / "model"))
    torch.testing.assert_close(logits(loaded, batch), trained, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("method", "params", "task", "lost"), [
    ("lora", {}, "classification", "the classifier head that task classification trains"),
    ("dora", {}, "causal_lm", "DoRA's magnitudes"),
    ("lora", {"bias": "all"}, "causal_lm", r"the biases \(method.bias: all\)"),
    ("lora", {"modules_to_save": ["lm_head"]}, "causal_lm", "method.modules_to_save"),
])
def test_pissa_refuses_before_loading_what_its_conversion_would_drop(method: str, params: dict, task: str,
                                                                      lost: str) -> None:
    built = build_method(method, {"init_lora_weights": "olora", **params})
    build_method(method, {"init_lora_weights": "gaussian", **params}).preflight(task)  # the plain start: no refusal
    with pytest.raises(UsageError, match=rf"method.init_lora_weights: olora .* would lose {lost}"):
        built.preflight(task)


def test_pissa_refuses_an_embedding_adapter_once_wrapped() -> None:
    method = build_method("lora", {"r": R, "init_lora_weights": "pissa", "target_modules": ["q_proj", "embed_tokens"]})
    method.preflight("causal_lm")
    lost = r"would lose 2 trained tensors \(.*lora_embedding_A.default, .*lora_embedding_B.default\)"
    with pytest.raises(UsageError, match=lost):
        method.prepare_model(tiny_model("llama"), "causal_lm")


def test_loraplus_gives_b_the_larger_learning_rate() -> None:
    lr, ratio = 1e-3, 16.0
    method = build_method("lora", {"r": R, "alpha": ALPHA, "loraplus_lr_ratio": ratio})
    model = method.prepare_model(tiny_model("llama"), "causal_lm")
    with torch.no_grad():  # a trained adapter, so that A gets a gradient too (B = 0 blocks it)
        for layer in lora_layers(model):
            layer.lora_B["default"].weight.normal_(0, 0.5)
    args = TrainingArguments(output_dir="unused", learning_rate=lr, weight_decay=0.0, use_cpu=True, report_to="none")
    optimizer = method_optimizer(method, model, args)
    assert optimizer is not None
    assert sorted({group["lr"] for group in optimizer.param_groups}) == [lr, lr * ratio]
    names = {id(p): name for name, p in model.named_parameters()}
    for group in optimizer.param_groups:
        assert all((".lora_B." in names[id(p)]) == (group["lr"] == lr * ratio) for p in group["params"])
    moved = step_sizes(model, optimizer, tiny_batch("llama"))
    # Adam's first step moves each weight by about its learning rate
    assert moved["lora_B"] == pytest.approx(lr * ratio, rel=1e-2)
    assert moved["lora_A"] == pytest.approx(lr, rel=1e-2)


def step_sizes(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """The largest change of any A and of any B weight over one optimizer step."""
    before = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    model.train()
    model(**batch).loss.backward()
    optimizer.step()
    moved = {"lora_A": 0.0, "lora_B": 0.0}
    for name, p in model.named_parameters():
        if name in before:
            kind = "lora_B" if ".lora_B." in name else "lora_A"
            moved[kind] = max(moved[kind], float((p.detach() - before[name]).abs().max()))
    return moved


def test_without_loraplus_the_trainer_keeps_its_own_optimizer() -> None:
    method = build_method("lora", {"r": R})
    model = method.prepare_model(tiny_model("llama"), "causal_lm")
    assert method.param_groups(model, 1e-3, 0.0) is None
    assert method.callbacks() == []


@pytest.mark.parametrize(("params", "message"), [
    ({"init_lora_weights": "loftq"}, r"method.init_lora_weights': loftq is not supported: .*bitsandbytes on a CUDA"),
    ({"init_lora_weights": "eva"}, r"method.init_lora_weights': must be one of true, gaussian, pissa"),
    ({"init_lora_weights": "pissa_niter_x"}, r"method.init_lora_weights': must be one of"),
    ({"loraplus_lr_ratio": 0.5}, r"method.loraplus_lr_ratio"),
    ({"use_rslora": "often"}, r"method.use_rslora"),
])
def test_bad_values_name_the_recipe_key(params: dict, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        build_method("lora", params)


def test_qlora_refuses_initialisations_that_rewrite_its_quantized_base() -> None:
    with pytest.raises(UsageError, match=r"method.init_lora_weights': olora rewrites the base weights"):
        build_method("qlora", {"init_lora_weights": "olora"})


def test_other_trainers_are_refused_the_options_they_would_ignore() -> None:
    """A preference method builds its LoraConfig for TRL's trainer, which neither converts nor groups."""
    for options in ({"init_lora_weights": "pissa"}, {"loraplus_lr_ratio": 4}):
        with pytest.raises(UsageError, match="loraplus_lr_ratio work with the methods lora, dora and qlora"):
            lora_config(tiny_model("llama"), "causal_lm", LoraParams(**options), use_dora=False)


def test_a_trained_pissa_adapter_overfits_like_lora() -> None:
    batch = tiny_batch("llama")
    model = build_method("lora", {"r": R, "init_lora_weights": "pissa"}).prepare_model(tiny_model("llama"),
                                                                                        "causal_lm")
    losses = run_steps(model, batch, 20)
    assert losses[-1] < 0.7 * losses[0]



def test_the_documented_example_validates() -> None:
    params = build_method("lora", {"r": 64, "alpha": 64, "use_rslora": True, "init_lora_weights": "pissa_niter_4",
                                   "loraplus_lr_ratio": 16}).params
    assert (params.init_lora_weights, params.loraplus_lr_ratio) == ("pissa_niter_4", 16)


def test_a_pissa_run_saves_a_plain_lora_for_the_original_base(tiny_model_dir: Path, tmp_path: Path) -> None:
    from ayar.pipeline import stage_prepare, stage_train
    from ayar.recipe import load_recipe

    recipe = load_recipe(None, [
        f"model.name_or_path={tiny_model_dir}", f"run.output_dir={tmp_path}", "run.name=pissa", "run.carbon=false",
        "data.synthetic.num_records=40", "data.synthetic.tasks=[upper]", "method.name=lora", f"method.r={R}",
        "method.init_lora_weights=pissa", "train.max_steps=2", "train.batch_size=4", "train.save_steps=1",
        "train.precision=fp32", "train.eval_steps=0", "train.report_to=[]"])
    stage_prepare(recipe)
    stage_train(recipe)
    saved = json.loads((recipe.run_dir / "model" / "adapter_config.json").read_text())
    assert (saved["r"], saved["init_lora_weights"]) == (2 * R, True)  # the run's save went through the method
    checkpoint = json.loads((recipe.run_dir / "checkpoints" / "checkpoint-2" / "adapter_config.json").read_text())
    assert (checkpoint["r"], checkpoint["init_lora_weights"]) == (R, "pissa")  # resumable as trained
