"""Training for preference methods (dpo, orpo, kto, simpo): the method's TRL trainer instead of AyarTrainer.

The recipe's train section maps onto TrainingArguments exactly as for every other method; the method
turns them into its TRL config and names the trainer class. TRL tokenizes the conversational records
itself (with the chat template set on the tokenizer), so no ayar tokenization runs here.
"""

from __future__ import annotations

import copy
import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, TrainerCallback, TrainingArguments, set_seed

from ayar.data.prepare import PreparedData
from ayar.data.templates import set_template
from ayar.errors import UsageError
from ayar.methods.base import count_parameters
from ayar.methods.preference import PREFERENCE_FORMATS, PreferenceMethod
from ayar.models.load import load_model, load_tokenizer
from ayar.recipe import Recipe
from ayar.train import checkpoint as ckpt
from ayar.train.callbacks import LossHistory, tensorboard_callback


def check_preference_recipe(recipe: Recipe, resume: bool = False) -> None:
    """A clear error for what a preference run cannot do."""
    if recipe.task != "causal_lm":
        raise UsageError(f"method '{recipe.method.name}' needs task causal_lm, not {recipe.task}")
    if recipe.data.format not in PREFERENCE_FORMATS:
        raise UsageError(f"method '{recipe.method.name}' trains on data.format {' or '.join(PREFERENCE_FORMATS)} "
                         f"(prompt, chosen, rejected), not '{recipe.data.format}'")
    if resume:
        raise UsageError(f"--resume is not available for method '{recipe.method.name}': its TRL trainer writes "
                         "pickled checkpoints, which ayar does not write or read; rerun without --resume")
    if recipe.train.load_best_model_at_end or recipe.train.early_stopping_patience:
        raise UsageError(f"train.load_best_model_at_end and early_stopping_patience need checkpoints, which "
                         f"method '{recipe.method.name}' does not write")


def frozen_copy(model: PreTrainedModel) -> PreTrainedModel:
    """A copy of the model with no trainable weight, in eval mode (the reference of a full-base DPO/KTO run)."""
    ref = copy.deepcopy(model).eval()
    for param in ref.parameters():
        param.requires_grad_(False)
    return ref


def build_preference_trainer(method: PreferenceMethod, model: PreTrainedModel, tokenizer: Any,
                             train_records: list[dict[str, Any]], eval_records: list[dict[str, Any]] | None,
                             args: TrainingArguments, max_length: int, system_prompt: str | None = None,
                             callbacks: list[TrainerCallback] | None = None) -> Any:
    """The method's TRL trainer over the prepared records (the tokenizer must carry its chat template)."""
    from datasets import Dataset

    trainer_cls, _ = method.trl_classes()
    train = method.trl_records(train_records, system_prompt)
    if not train:
        raise UsageError(f"no records for method '{method.name}' in the training split")
    evals = method.trl_records(eval_records, system_prompt) if eval_records else []
    peft_config = method.peft_config(model, "causal_lm")
    kwargs: dict[str, Any] = {"peft_config": peft_config}
    if method.uses_reference:
        # A LoRA base: None, and TRL computes the reference with the adapter switched off (no second copy).
        # A full base: a frozen copy made here, since TRL would reload it from config._name_or_path, which a
        # model built or converted in memory does not have.
        kwargs["ref_model"] = None if peft_config is not None else frozen_copy(model)
    return trainer_cls(model=method.prepare_model(model, "causal_lm"), args=method.trl_config(args, max_length),
                       train_dataset=Dataset.from_list(train), eval_dataset=Dataset.from_list(evals) if evals else None,
                       processing_class=tokenizer, callbacks=callbacks or [], **kwargs)


def train_preference(recipe: Recipe, base_model: str, prepared: PreparedData, run_dir: Path,
                     method: PreferenceMethod, resume: bool = False,
                     extra_callbacks: list[TrainerCallback] | None = None) -> Any:
    """Train ``base_model`` with the preference method on the prepared splits; save into run_dir/model."""
    from ayar.train.engine import TrainResult, resolve_precision, training_arguments

    check_preference_recipe(recipe, resume)
    set_seed(recipe.run.seed)
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    tokenizer = load_tokenizer(base_model, recipe.model.trust_remote_code, recipe.model.revision)
    set_template(tokenizer, recipe.data.template)
    model = load_model(base_model, recipe.task, recipe.model.trust_remote_code, recipe.model.revision,
                       recipe.model.dtype)
    resolve_precision(recipe.train.precision)  # fp16 on a CPU: the engine's clear error
    val = prepared.read_split("validation")
    args = training_arguments(recipe.train, run_dir / "checkpoints", recipe.run.seed, bool(val))
    history = LossHistory()
    callbacks = [history, tensorboard_callback(run_dir / "tb"), *(extra_callbacks or [])]
    trainer = build_preference_trainer(method, model, tokenizer, prepared.read_split("train"), val or None, args,
                                       recipe.data.max_length, recipe.data.system_prompt, callbacks)
    trainable, total = count_parameters(trainer.model)
    print(f"method {method.name} (TRL {type(trainer).__name__}, base {method.params.base}): {trainable:,} trainable "
          f"of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)")
    start = time.perf_counter()
    output = trainer.train()
    wall = time.perf_counter() - start
    model_dir = run_dir / "model"
    if trainer.args.should_save:
        def write_model(folder: Path) -> None:
            trainer.model.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))

        ckpt.write_atomically(run_dir, "model", write_model)
        (run_dir / "train_history.json").write_text(json.dumps(history.records, indent=1), encoding="utf-8")
    losses = [h["loss"] for h in history.records if "loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    return TrainResult(model_dir=model_dir, final_loss=float(losses[-1]) if losses else math.nan,
                       steps=int(output.global_step), tokens_seen=tokens,
                       tokens_per_second=tokens / wall if wall > 0 else 0.0, wall_time_s=wall,
                       trainable_params=trainable, total_params=total, loss_history=history.records)
