"""GRPO as a kind of training run: TRL's ``GRPOTrainer`` on the prepared split's prompts.

Each training record becomes one row: its prompt, rendered with the recipe's chat template up to the
first assistant turn (the tools it offers included), and the fields the rewards grade an answer by (the
generated task, the reference answer or call). TRL samples the answers and computes the loss; the
trainer is built by :func:`ayar.train.trainer.build_trainer`, so a GRPO run has ayar's fault guard,
tracking, pickle-free checkpoints and resume. TRL's own sampler stays (``resumable_order=False``): it
repeats each prompt ``num_generations`` times inside one batch, which is what GRPO's groups are, and it
draws its order from the run's seed, so a resumed run sees the same prompts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from transformers import PreTrainedModel, Trainer

from ayar.data.checkers import CHECKERS
from ayar.data.prepare import PreparedData
from ayar.data.templates import record_to_messages, record_tools, render_prompt
from ayar.errors import UsageError
from ayar.methods.grpo import Grpo
from ayar.models.load import (
    is_adapter_dir,
    load_adapter_model,
    load_model,
    resolve_model_name,
)
from ayar.models.template_contract import write_contract
from ayar.recipe import Recipe
from ayar.train.callbacks import LossHistory
from ayar.train.faults import FaultGuard
from ayar.train.lifecycle import MethodRun, RunSetup, library_trainer
from ayar.train.trainer import TrainerBuild, build_trainer

GRPO_FORMATS = ("alpaca", "messages", "sharegpt")  # record shapes with a prompt and a reference answer
ROW_FIELDS = ("task", "input", "output", "label", "reference", "tools")


def grpo_row(record: dict[str, Any], tokenizer: Any, system_prompt: str | None = None) -> dict[str, Any]:
    """One training row: the prompt text up to the first assistant turn and the fields the rewards read.

    The reference assistant turn and the offered tools travel as JSON text (one column type for every row).
    """
    messages = record_to_messages(record, system_prompt)
    answer = next((i for i, m in enumerate(messages) if m["role"] == "assistant"), len(messages))
    tools = record_tools(record)
    row = {name: "" for name in ROW_FIELDS}
    row |= {name: str(record[name]) for name in ("task", "input", "output", "label") if record.get(name) is not None}
    if answer < len(messages):
        row["reference"] = json.dumps(messages[answer], ensure_ascii=False)
    if tools:
        row["tools"] = json.dumps(tools, ensure_ascii=False)
    return {"prompt": render_prompt(tokenizer, messages[:answer], tools), **row}


def check_grpo_recipe(recipe: Recipe, method: Grpo) -> None:
    """A clear error for what a GRPO run cannot do."""
    if recipe.data.format not in GRPO_FORMATS:
        raise UsageError(f"method 'grpo' samples answers to prompts: data.format {' or '.join(GRPO_FORMATS)}, "
                         f"not '{recipe.data.format}'")
    if recipe.train.load_best_model_at_end or recipe.train.early_stopping_patience:
        raise UsageError("train.load_best_model_at_end and early_stopping_patience select on eval_loss, which "
                         "method 'grpo' does not compute")
    group = recipe.train.batch_size * recipe.train.grad_accum
    if group % method.params.num_generations:
        raise UsageError(f"method 'grpo': train.batch_size x grad_accum ({group}) must be a multiple of "
                         f"method.num_generations ({method.params.num_generations}): each prompt's answers are "
                         "sampled together")


def check_rows(rows: list[dict[str, Any]], method: Grpo) -> None:
    """The answer reward needs each row's generated task to have a checker."""
    if not rows:
        raise UsageError("no records for method 'grpo' in the training split")
    if not any(r.name == "answer" for r in method.params.rewards):
        return
    unchecked = sorted({row["task"] or "(none)" for row in rows if row["task"] not in CHECKERS})
    if unchecked:
        raise UsageError(f"the answer reward grades records of the generated tasks ({', '.join(sorted(CHECKERS))}); "
                         f"records of task {', '.join(unchecked)} have no checker: give method.rewards a "
                         "function of your own")


def load_start_model(name: str, recipe: Recipe) -> PreTrainedModel:
    """The model GRPO starts from: a run's adapter (trainable, on its base) or a plain model."""
    model = recipe.model
    if is_adapter_dir(resolve_model_name(name)):
        return load_adapter_model(name, recipe.task, model.trust_remote_code, model.dtype, trainable=True)
    return load_model(name, recipe.task, model.trust_remote_code, model.revision, model.dtype)


class GrpoRun(MethodRun):
    """TRL's GRPOTrainer sampling answers to the training split's prompts and learning from their rewards."""

    method: Grpo

    def __init__(self, recipe: Recipe, base_model: str, prepared: PreparedData, method: Grpo) -> None:
        super().__init__(recipe, base_model, prepared, method)
        self.rows: list[dict[str, Any]] = []

    def check_recipe(self) -> None:
        check_grpo_recipe(self.recipe, self.method)

    def tokenizer(self) -> Any:
        tokenizer = super().tokenizer()
        tokenizer.padding_side = "left"  # TRL generates from left-padded prompts
        return tokenizer

    def prepare_data(self, tokenizer: Any) -> None:
        system_prompt = self.recipe.data.system_prompt
        self.rows = [grpo_row(r, tokenizer, system_prompt) for r in self.prepared.read_split("train")]
        check_rows(self.rows, self.method)

    def build_trainer(self, setup: RunSetup, tokenizer: Any, batch: int, accum: int, history: LossHistory,
                      faults: FaultGuard) -> Trainer:
        from datasets import Dataset

        from ayar.train.tracking import tracking_callbacks

        recipe, method = self.recipe, self.method
        model = method.prepare_model(load_start_model(self.base_model, recipe), recipe.task)
        return build_trainer(TrainerBuild(
            model, recipe.train.model_copy(update={"batch_size": batch, "grad_accum": accum}), setup.checkpoints,
            Dataset.from_list(self.rows), seed=setup.seed, processing_class=tokenizer, method=method,
            callbacks=setup.callbacks, history=history, faults=faults,
            reporters=tracking_callbacks(recipe, setup.run_dir),
            resumable_order=False))  # TRL's sampler makes the groups (see the module's docstring)

    def describe(self, trainer: Trainer) -> str:
        return f"method grpo (TRL {library_trainer(trainer)}, {self.method.params.num_generations} answers per prompt)"

    def write_model(self, trainer: Trainer, tokenizer: Any, folder: Path) -> None:
        if "ref" in getattr(trainer.model, "peft_config", {}):
            # TRL's frozen copy of a start adapter, the KL term's reference (beta > 0): not part of the model
            trainer.model.delete_adapter("ref")
        super().write_model(trainer, tokenizer, folder)
        write_contract(folder, tokenizer, tools_used=any(row["tools"] for row in self.rows),
                       reasoning_used=any(reward.think for reward in self.method.params.rewards))
