"""Preference tuning (dpo, orpo, kto, simpo) as a kind of training run: the method's TRL trainer.

The recipe's train section maps onto the TRL config exactly as it maps onto TrainingArguments for every
other method (:func:`ayar.train.trainer.build_trainer`, with the method's ``trainer_spec``), so a
preference run gets ayar's fault guard, tracking, pickle-free checkpoints and the out-of-memory retry
too (:mod:`ayar.train.lifecycle`). TRL tokenizes the conversational records itself (with the chat
template set on the tokenizer); no ayar tokenization runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, Trainer

from ayar.errors import UsageError
from ayar.methods.preference import PREFERENCE_FORMATS, PreferenceMethod
from ayar.models.load import load_model
from ayar.models.template_contract import write_contract
from ayar.recipe import Recipe, TrainConfig
from ayar.tasks import get_task, tasks_where
from ayar.train.callbacks import LossHistory
from ayar.train.faults import FaultGuard
from ayar.train.lifecycle import MethodRun, RunSetup, library_trainer
from ayar.train.trainer import TrainerBuild, build_trainer


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

    ``build`` holds further :class:`~ayar.train.trainer.TrainerBuild` fields (callbacks, history, reporters...).
    """
    from datasets import Dataset

    train = method.trl_records(train_records, system_prompt)
    if not train:
        raise UsageError(f"no records for method '{method.name}' in the training split")
    evals = method.trl_records(eval_records, system_prompt) if eval_records else []
    model = method.prepare_model(model, "causal_lm")
    return build_trainer(TrainerBuild(
        model, cfg, output_dir, Dataset.from_list(train), seed=seed,
        eval_dataset=Dataset.from_list(evals) if evals else None, processing_class=tokenizer, method=method,
        arguments={"max_length": max_length}, resumable_order=not method.unpaired, **build))


class PreferenceRun(MethodRun):
    """The preference method's TRL trainer on the prepared preference (or KTO) records."""

    method: PreferenceMethod

    def check_recipe(self) -> None:
        check_preference_recipe(self.recipe)

    def build_trainer(self, setup: RunSetup, tokenizer: Any, batch: int, accum: int, history: LossHistory,
                      faults: FaultGuard) -> Trainer:
        from ayar.train.tracking import tracking_callbacks

        recipe, method = self.recipe, self.method
        model = load_model(self.base_model, recipe.task, recipe.model.trust_remote_code, recipe.model.revision,
                           recipe.model.dtype)
        return build_preference_trainer(
            method, model, tokenizer, self.prepared.read_split("train"),
            self.prepared.read_split("validation") or None,
            recipe.train.model_copy(update={"batch_size": batch, "grad_accum": accum}), setup.checkpoints,
            recipe.data.max_length, seed=setup.seed, system_prompt=recipe.data.system_prompt,
            callbacks=setup.callbacks, history=history, faults=faults,
            reporters=tracking_callbacks(recipe, setup.run_dir))  # TensorBoard among them, as train.report_to says

    def describe(self, trainer: Trainer) -> str:
        return f"method {self.method.name} (TRL {library_trainer(trainer)}, base {self.method.params.base})"

    def write_model(self, trainer: Trainer, tokenizer: Any, folder: Path) -> None:
        super().write_model(trainer, tokenizer, folder)
        write_contract(folder, tokenizer, tools_used=False)  # checked by serve, batch and export
