"""recipes/seed-example.yaml says what the process document's code says: distilgpt2's shape, the plain
Trainer's settings (batch 2, one epoch, save every 100 steps, log every 10), full fine-tuning, fp32."""

from __future__ import annotations

from pathlib import Path

import torch

from ayar.recipe import load_recipe
from ayar.train.engine import training_arguments

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "seed-example.yaml"


def test_trainer_arguments_are_the_documents() -> None:
    recipe = load_recipe(RECIPE)
    args = training_arguments(recipe.train, Path("unused"), recipe.run.seed, has_eval=False)
    assert args.per_device_train_batch_size == 2
    assert args.num_train_epochs == 1 and args.max_steps == -1
    assert args.save_strategy == "steps" and args.save_steps == 100
    assert args.logging_steps == 10
    assert args.learning_rate == 5e-5 and args.warmup_steps == 0 and args.lr_scheduler_type == "linear"
    assert not args.bf16 and not args.fp16  # fp32, the Trainer's default
    assert recipe.method.name == "full" and recipe.method.params() == {}
    assert recipe.train.packing is False and recipe.data.mask_prompt is False  # one padded example per row


def test_the_model_has_distilgpt2s_shape() -> None:
    from ayar.models.scratch import build_model, pydoc_topics_text, train_tokenizer
    from ayar.recipe import TokenizerTrainConfig

    recipe = load_recipe(RECIPE)
    assert recipe.pretrain.enabled and recipe.model.name_or_path is None  # offline: built from a config
    tokenizer = train_tokenizer(pydoc_topics_text()[:50_000], TokenizerTrainConfig(vocab_size=512))
    with torch.device("meta"):  # the shape only: no memory, no initialisation
        config = build_model(recipe.pretrain.model, tokenizer, seed=0).config
    assert config.model_type == "gpt2"
    assert (config.n_layer, config.n_embd, config.n_head, config.n_inner, config.n_positions) == (6, 768, 12, 3072, 1024)
