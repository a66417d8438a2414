"""The method plug-in interface: what to freeze or wrap, an optional extra loss, optional callbacks."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError
from transformers import PreTrainedModel, Trainer, TrainerCallback, TrainingArguments

from ayar.errors import UsageError
from ayar.recipe import params_error
from ayar.tasks import task_names


class NoParams(BaseModel):
    """A method without parameters of its own."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class TrainerSpec:
    """Which Trainer class a method trains with, and what it adds to the arguments and the constructor.

    The default is transformers' own ``Trainer``. A method that needs another trainer (TRL's
    ``DPOTrainer``, ``KTOTrainer``...) returns one from :meth:`Method.trainer_spec`: ``args_class`` is
    that trainer's config class (``DPOConfig``), ``args`` its extra fields (``beta``...), ``kwargs``
    extra constructor arguments (``ref_model``...). ``ayar.train.trainer.build_trainer`` puts ayar's
    behaviour (fault guard, atomic checkpoints, exact resume, the method's loss hooks) in front of it.
    """

    trainer_class: type[Trainer] = Trainer
    args_class: type[TrainingArguments] = TrainingArguments
    args: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)


class Method:
    """A fine-tuning method. Subclass, set ``name`` and ``params_model``, and decorate with ``@register``."""

    name: ClassVar[str]
    summary: ClassVar[str] = ""  # one line on when to use it, shown in `ayar train --help`
    params_model: ClassVar[type[BaseModel]] = NoParams
    tasks: ClassVar[tuple[str, ...] | None] = None  # None: every registered task; a method may narrow it
    is_adapter: ClassVar[bool] = False  # saves an adapter rather than full weights
    # The frozen weights are read only by matmuls, so under bf16 autocast they may be stored in bf16
    # (``ayar.train.precision``): true for LoRA, not for DoRA, whose weight norm reads them directly.
    frozen_weights_matmul_only: ClassVar[bool] = False
    # The kind of training run it needs, by name in ayar.train.lifecycle.RUN_KINDS (the train layer
    # sits above this one, so a name, not the class): "supervised" trains on ayar-tokenized records.
    training_run: ClassVar[str] = "supervised"
    former_names: ClassVar[tuple[str, ...]] = ()  # names it had before: older recipes still load it

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        self.params = self.check_params(params)

    @classmethod
    def check_params(cls, params: dict[str, Any] | None) -> BaseModel:
        """The method's validated parameters; a UsageError naming the recipe key (``method.r``) otherwise."""
        try:
            return cls.params_model.model_validate(params or {})
        except ValidationError as exc:
            raise params_error(exc, "method", cls.params_model) from None

    def preflight(self, task: str) -> None:
        """Check the task and the machine before anything is loaded; raise UsageError if they cannot work."""
        if task not in self.supported_tasks():
            raise UsageError(f"method '{self.name}' does not support task '{task}'; it supports: "
                             f"{', '.join(self.supported_tasks())}")

    @classmethod
    def supported_tasks(cls) -> tuple[str, ...]:
        """The tasks this method trains: its own list, or every task registered now."""
        return cls.tasks if cls.tasks is not None else task_names()

    def model_load_kwargs(self, task: str) -> dict[str, Any]:
        """Extra keyword arguments for ``from_pretrained`` (e.g. a quantization config)."""
        return {}

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        """Freeze, wrap or modify the model before training; return the model to train."""
        return model

    def setup(self, model: torch.nn.Module, tokenizer: Any, train_dataset: Any, run_dir: Any) -> None:
        """Called once after the model is prepared and before training (e.g. load a teacher)."""

    def extra_loss(self, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any) -> torch.Tensor | None:
        """An optional term added to the task loss (a per-batch mean)."""
        return None

    def compute_loss(
        self, model: torch.nn.Module, inputs: dict[str, Any], meta: dict[str, Any], num_items_in_batch: Any
    ) -> tuple[torch.Tensor, Any] | None:
        """Replace the task loss entirely: return (loss, outputs), or None to keep the Trainer's loss.

        ``inputs`` are the model's inputs (labels included); ``meta`` holds the batch's other
        columns, such as ``example_index``. A replaced loss must already be normalised over the
        accumulated batch when ``num_items_in_batch`` is given, as the Trainer's own loss is.
        """
        return None

    def encode_extra(self, record: dict[str, Any], encoded: dict[str, Any], tokenizer: Any, task: str) -> dict:
        """Extra per-row columns computed from the record (with its ``messages`` as trained) at tokenization.

        A column is either fixed-width or per-token (as long as ``input_ids``; the collator pads it like
        the tokens, e.g. guided_attention's guide-token mask), and is listed in ``model_inputs_extra`` so the trainer
        hands it to the method in ``meta``.
        """
        return {}

    def use_validation(self, eval_dataset: Any) -> None:
        """Called once before training with the tokenized validation split (None when there is none)."""

    def model_inputs_extra(self) -> tuple[str, ...]:
        """Dataset columns this method needs in ``meta`` (kept by the collator, never passed to the model)."""
        return ()

    def callbacks(self) -> list[TrainerCallback]:
        """Optional Trainer callbacks (schedules such as gradual unfreezing)."""
        return []

    def save_model(self, model: torch.nn.Module, folder: Path) -> None:
        """Write the trained model (or adapter) into the run's model folder."""
        model.save_pretrained(str(folder))

    def trainer_spec(self) -> TrainerSpec:
        """The Trainer class (and its extra arguments) this method trains with; transformers' ``Trainer`` by default."""
        return TrainerSpec()

    def param_groups(self, model: torch.nn.Module, base_lr: float, weight_decay: float) -> list[dict] | None:
        """Optimizer param groups (per-group ``lr``, ``weight_decay``), or None for the Trainer's own.

        A method that unfreezes weights during training must list them here from the start:
        the Trainer's default optimizer leaves out every weight frozen at creation.
        """
        return None


def method_optimizer(method: Method, model: torch.nn.Module, args: TrainingArguments) -> torch.optim.Optimizer | None:
    """The optimizer the recipe's ``optim`` names, over the method's param groups; None if it has none.

    A Trainer subclass calls this from ``create_optimizer`` before falling back to the default.
    """
    groups = method.param_groups(model, args.learning_rate, args.weight_decay)
    if groups is None:
        return None
    optimizer_cls, kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    return optimizer_cls(groups, **kwargs)  # each group's lr and weight_decay win over the defaults


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
