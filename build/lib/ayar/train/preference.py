"""Training for preference methods (dpo, orpo, kto, simpo): the method's TRL trainer through ``build_trainer``.

The recipe's train section maps onto the TRL config exactly as it maps onto TrainingArguments for every
other method (:func:`ayar.train.trainer.build_trainer`, with the method's ``trainer_spec``), so a
preference run gets ayar's fault guard, tracking and pickle-free checkpoints too. TRL tokenizes the
conversational records itself (with the chat template set on the tokenizer); no ayar tokenization runs.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel, Trainer, TrainerCallback, set_seed

from ayar.console import say, warn
from ayar.data.prepare import PreparedData
from ayar.data.templates import set_template
from ayar.errors import UsageError
from ayar.methods.base import count_parameters
from ayar.methods.preference import PREFERENCE_FORMATS, PreferenceMethod
from ayar.models.load import load_model, load_tokenizer
from ayar.models.template_contract import write_contract
from ayar.recipe import Recipe, TrainConfig
from ayar.tasks import get_task, tasks_where
from ayar.train import checkpoint as ckpt
from ayar.train.callbacks import LossHistory
from ayar.train.faults import FaultGuard, TrainingStopped
from ayar.train.trainer import build_trainer


def check_preference_recipe(recipe: Recipe) -> None:
    """A clear error for what a preference run cannot do."""
    if not get_task(recipe.task).chat:
        raise UsageError(f"method '{recipe.method.name}' needs task {' or '.join(tasks_where('chat'))}, "
                         f"not {recipe.task}")
    if recipe.data.format not in PREFERENCE_FORMATS:
        raise UsageError(f"method '{recipe.method.name}' trains on data.format {' or '.join(PREFERENCE_FORMATS)} "
                         f"(prompt, chosen, rejected), not '{recipe.data.format}'")
    if recipe.train.load_best_model_at_end or recipe.train.early_stopping_patience:
        raise UsageError(f"train.load_best_model_at_end and early_stopping_patience select on eval_loss, which "
                         f"method '{recipe.method.name}' does not compute as the other methods do")


def build_preference_trainer(method: PreferenceMethod, model: PreTrainedModel, tokenizer: Any,
                             train_records: list[dict[str, Any]], eval_records: list[dict[str, Any]] | None,
                             cfg: TrainConfig, output_dir: Path, max_length: int, *, seed: int = 0,
                             system_prompt: str | None = None, **build: Any) -> Trainer:
    """The method's TRL trainer over the prepared records (the tokenizer must carry its chat template).

    ``build`` goes on to :func:`~ayar.train.trainer.build_trainer` (callbacks, history, reporters...).
    """
    from datasets import Dataset

    train = method.trl_records(train_records, system_prompt)
    if not train:
        raise UsageError(f"no records for method '{method.name}' in the training split")
    evals = method.trl_records(eval_records, system_prompt) if eval_records else []
    model = method.prepare_model(model, "causal_lm")
    return build_trainer(model, cfg, output_dir, Dataset.from_list(train), seed=seed,
                         eval_dataset=Dataset.from_list(evals) if evals else None, processing_class=tokenizer,
                         method=method, arguments={"max_length": max_length},
                         resumable_order=not method.unpaired, **build)


def train_preference(recipe: Recipe, base_model: str, prepared: PreparedData, run_dir: Path,
                     method: PreferenceMethod, resume: bool = False,
                     extra_callbacks: list[TrainerCallback] | None = None) -> dict[str, Any]:
    """Train ``base_model`` with the preference method on the prepared splits; save into run_dir/model.

    Returns the fields of the engine's ``TrainResult`` (the engine builds it: no import back up to it).
    """
    from ayar.train.tracking import tracking_callbacks

    check_preference_recipe(recipe)
    method.preflight(recipe.task)
    set_seed(recipe.run.seed)
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    tokenizer = load_tokenizer(base_model, recipe.model.trust_remote_code, recipe.model.revision)
    set_template(tokenizer, recipe.data.template)
    model = load_model(base_model, recipe.task, recipe.model.trust_remote_code, recipe.model.revision,
                       recipe.model.dtype)
    history, faults = LossHistory(), FaultGuard(recipe.train.on_nonfinite)
    last = ckpt.find_resumable(run_dir / "checkpoints", warn=warn) if resume else None
    if resume:
        say(f"resuming from {last}" if last else "no complete checkpoint to resume from: starting from the beginning")
    else:
        ckpt.clean_temporary(run_dir / "checkpoints")
    trainer = build_preference_trainer(
        method, model, tokenizer, prepared.read_split("train"), prepared.read_split("validation") or None,
        recipe.train, run_dir / "checkpoints", recipe.data.max_length, seed=recipe.run.seed,
        system_prompt=recipe.data.system_prompt, callbacks=extra_callbacks or (), history=history, faults=faults,
        reporters=tracking_callbacks(recipe, run_dir))  # TensorBoard among them, as train.report_to says
    trainable, total = count_parameters(trainer.model)
    say(f"method {method.name} (TRL {type(trainer).__name__}, base {method.params.base}): {trainable:,} trainable "
          f"of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)")
    start = time.perf_counter()
    with faults.signals():
        output = trainer.train(resume_from_checkpoint=str(last) if last else None)
    wall = time.perf_counter() - start
    step = int(trainer.state.global_step)
    if faults.signal_name and step < trainer.state.max_steps:
        where = trainer.saved_checkpoints[-1] if trainer.saved_checkpoints else run_dir / "checkpoints"
        raise TrainingStopped(f"stopped by {faults.signal_name} at step {step}; checkpoint written to {where}; "
                              "continue with `ayar train --resume` (same recipe)")
    model_dir = run_dir / "model"
    if trainer.args.should_save:
        def write_model(folder: Path) -> None:
            trainer.model.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))
            write_contract(folder, tokenizer, tools_used=False)  # checked by serve/batch/export

        ckpt.write_atomically(run_dir, "model", write_model)
        (run_dir / "train_history.json").write_text(json.dumps(history.records, indent=1), encoding="utf-8")
    losses = [h["loss"] for h in history.records if "loss" in h]
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    return {"model_dir": model_dir, "final_loss": float(losses[-1]) if losses else math.nan,
            "steps": int(output.global_step), "tokens_seen": tokens,
            "tokens_per_second": tokens / wall if wall > 0 else 0.0, "wall_time_s": wall,
            "trainable_params": trainable, "total_params": total, "loss_history": history.records,
            **faults.report()}
