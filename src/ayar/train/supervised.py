"""Supervised fine-tuning as a kind of training run: ayar tokenizes the prepared splits, the method
prepares the model, and :func:`~ayar.train.trainer.build_trainer` assembles the Trainer.

Every method that trains on labelled records (full, layers, LoRA and the other adapters, distillation,
reweighting, ALUM, guided attention...) runs this way; :mod:`ayar.train.lifecycle` owns the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from ayar.console import say, warn
from ayar.data.prepare import PreparedData
from ayar.errors import UsageError
from ayar.methods.base import Method
from ayar.models.load import is_adapter_dir, load_model, save_head_config
from ayar.models.template_contract import write_contract
from ayar.recipe import Recipe
from ayar.tasks import get_task
from ayar.train.callbacks import LossHistory
from ayar.train.faults import FaultGuard
from ayar.train.lifecycle import MethodRun, RunSetup
from ayar.train.packing import collator_for_packing, resolve_packing
from ayar.train.self_distill import SelfDistillation
from ayar.train.tasks import (
    LabelMap,
    check_task_format,
    collator_for,
    model_kwargs_for,
    reasoning_trained,
    tokenize_split,
)
from ayar.train.tracking import tracking_callbacks
from ayar.train.trainer import TrainerBuild, build_trainer, prepare_model


class SupervisedRun(MethodRun):
    """The recipe's method trained on the prepared splits, tokenized by ayar for the recipe's task."""

    chat_template_always = False

    def __init__(self, recipe: Recipe, base_model: str, prepared: PreparedData, method: Method) -> None:
        super().__init__(recipe, base_model, prepared, method)
        self.labels: LabelMap | None = None
        self.train_records: list[dict[str, Any]] = []
        self.train_set: Any = None
        self.eval_set: Any = None

    def check_recipe(self) -> None:
        check_task_format(self.recipe)

    def prepare_data(self, tokenizer: Any) -> None:
        recipe, prepared = self.recipe, self.prepared
        self.train_records = prepared.read_split("train")
        if recipe.data.rehearsal is not None:
            self.train_records = self.train_records + _rehearsal(prepared)
        self.labels = LabelMap.from_records(self.train_records) if get_task(recipe.task).label_map else None
        self.train_set = tokenize_split(self.train_records, tokenizer, recipe, self.labels, self.method)
        val_records = prepared.read_split("validation")
        self.eval_set = tokenize_split(val_records, tokenizer, recipe, self.labels, self.method) if val_records else None

    def build_trainer(self, setup: RunSetup, tokenizer: Any, batch: int, accum: int, history: LossHistory,
                      faults: FaultGuard) -> Trainer:
        recipe, method = self.recipe, self.method
        model = load_model(self.base_model, recipe.task, recipe.model.trust_remote_code, recipe.model.revision,
                           recipe.model.dtype, **model_kwargs_for(recipe, tokenizer, self.labels),
                           **method.model_load_kwargs(recipe.task))
        model = prepare_model(method, model, recipe.task, recipe.train.precision)
        method.setup(model, tokenizer, self.train_set, setup.run_dir)
        method.use_validation(self.eval_set)
        packed, why_not = resolve_packing(recipe.train.packing, recipe.task, model, method.model_inputs_extra())
        next_token = get_task(recipe.task).next_token
        if next_token:
            say("packing: on" if packed else f"packing: off ({why_not or 'train.packing: false'})")
        return build_trainer(TrainerBuild(
            model, recipe.train.model_copy(update={"batch_size": batch, "grad_accum": accum, "packing": packed}),
            setup.checkpoints, self.train_set, seed=setup.seed, eval_dataset=self.eval_set,
            data_collator=(collator_for_packing(recipe, tokenizer, model) if packed
                           else collator_for(recipe, tokenizer, model, method.model_inputs_extra())),
            processing_class=tokenizer, method=method, callbacks=setup.callbacks, history=history, faults=faults,
            reporters=tracking_callbacks(recipe, setup.run_dir), chunked_loss=next_token and recipe.train.chunked_loss,
            self_distill=self_distillation(recipe, model, tokenizer), shared_opening=shared_opening(recipe),
        ))

    def write_model(self, trainer: Trainer, tokenizer: Any, folder: Path) -> None:
        self.method.save_model(trainer.model, folder)  # the method's own format (PiSSA converts, say)
        tokenizer.save_pretrained(str(folder))
        if self.labels is not None and is_adapter_dir(folder):  # the adapter's head needs its labels to load again
            save_head_config(trainer.model, folder)
        # checked by serve, batch and export: the chat template and special tokens the model was trained with
        write_contract(folder, tokenizer, tools_used=any(r.get("tools") for r in self.train_records),
                       reasoning_used=reasoning_trained(self.train_records, self.recipe))


def _rehearsal(prepared: PreparedData) -> list[dict[str, Any]]:
    """The base model's answers that ``data.rehearsal`` mixes into training (written by prepare)."""
    records = prepared.read_rehearsal()
    if records is None:  # e.g. `ayar iterate`'s v2 data, which holds feedback records only
        warn(f"data.rehearsal is set but {prepared.root} holds no rehearsal records (`ayar prepare` writes "
             "them): training without rehearsal")
        return []
    say(f"rehearsal: {len(records)} rows of the base model's own answers mixed into {prepared.root.name}/train")
    return records


def self_distillation(recipe: Recipe, model: torch.nn.Module, tokenizer: Any) -> SelfDistillation | None:
    """The KL term toward the base (``train.self_distill``), for chat causal LMs; None when its weight is 0."""
    if recipe.train.self_distill.weight == 0:
        return None
    if not get_task(recipe.task).chat:
        raise UsageError(f"train.self_distill keeps a chat model's general behaviour; task '{recipe.task}' has none")
    return SelfDistillation(model, tokenizer, recipe.train.self_distill, recipe.run.seed, shared_opening(recipe))


def shared_opening(recipe: Recipe) -> bool:
    """``train.shared_opening``, where it applies: the opening's cache and checkpointing's recompute don't mix."""
    return recipe.train.shared_opening and not recipe.train.gradient_checkpointing
