"""The one place that assembles a training run: ``build_trainer`` and the Trainer it builds.

Every training path (the fine-tuning engine, pretraining, the benchmark, a method that brings its own
trainer class such as TRL's ``DPOTrainer``) gets its Trainer here, so each gets the same behaviour:
a method may replace or extend the loss and the optimizer, non-finite losses and gradients are caught
(:class:`~ayar.train.faults.FaultGuard`), checkpoints are atomic and pickle-free
(:mod:`ayar.train.checkpoint`) and a resumed run continues exactly where it stopped.

The behaviour comes in as a mixin (:class:`AyarTrainerMixin`) placed in front of any
``transformers.Trainer`` subclass, so a TRL trainer keeps its own loss and data handling.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import get_length_grouped_indices

from ayar.console import warn
from ayar.errors import UsageError
from ayar.methods.base import Method, TrainerSpec, method_optimizer
from ayar.models.heads import hidden_states_as_logits, output_layer
from ayar.models.opening import forward_with_shared_opening
from ayar.recipe import TrainConfig
from ayar.safety import refuse_pickles
from ayar.train import checkpoint as ckpt
from ayar.train.attention import use_short_rows_attention
from ayar.train.callbacks import LossHistory, tensorboard_callback
from ayar.train.faults import FaultGuard
from ayar.train.loss import linear_cross_entropy
from ayar.train.precision import resolve_precision, skip_adapter_input_casts, store_frozen_weights_for
from ayar.train.self_distill import SelfDistillation

META_COLUMNS = ("example_index", "length")  # batch columns kept for methods, never passed to the model
# TrainingArguments fields renamed in a transformers release ayar runs on (new name: old name): 5.23 renamed
# gradient_checkpointing, keeping the old name as an alias, while the GPU image's 5.17 knows only the old one
RENAMED_ARGUMENTS = {"activation_checkpointing": "gradient_checkpointing"}

__all__ = ["AyarTrainer", "AyarTrainerMixin", "TrainerBuild", "TrainerSpec", "build_trainer", "prepare_model",
           "trainer_class_for", "training_arguments"]


class EpochSeededSampler(Sampler[int]):
    """Each epoch's example order depends only on (seed, epoch), never on the global RNG.

    transformers' samplers draw their order from the global torch RNG, which a resumed run cannot
    reproduce mid-run; with this order fixed, skipping the batches already trained is exact.
    """

    def __init__(self, size: int, seed: int, lengths: list[int] | None = None, megabatch: int = 1) -> None:
        self.size, self.seed, self.lengths, self.megabatch = size, seed, lengths, megabatch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.lengths is not None:
            return iter(get_length_grouped_indices(self.lengths, self.megabatch, generator=generator))
        return iter(torch.randperm(self.size, generator=generator).tolist())


class ResumeCheckpoint(TrainerCallback):
    """Puts back what an ayar checkpoint holds beyond the weights: optimizer, scheduler, scaler, random states.

    transformers loads these from its own pickle files (``optimizer.pt``, ``rng_state.pth``); an ayar
    checkpoint has none, so the Trainer's loaders find nothing and this callback loads the JSON +
    safetensors states instead, at the moments the Trainer would have: the optimizer before the first
    step, the random states where the resumed epoch's batches start (after the skipped ones).
    """

    def __init__(self, folder: Path, accelerator: Any, process_index: int) -> None:
        self.folder, self.accelerator, self.process_index = folder, accelerator, process_index
        self.rng_pending = True

    def on_train_begin(self, args: Any, state: Any, control: Any, optimizer: Any = None, lr_scheduler: Any = None,
                       **kwargs: Any) -> None:
        states = ckpt.load_state(self.folder, "optimizer")
        if states is None:
            raise ckpt.CheckpointError(f"checkpoint {self.folder} has no optimizer state (optimizer.json)")
        optimizer.load_state_dict(states)
        scheduler = ckpt.load_state(self.folder, "scheduler")
        if scheduler is not None:
            lr_scheduler.load_state_dict(scheduler)
        scaler, scaler_state = getattr(self.accelerator, "scaler", None), ckpt.load_state(self.folder, "scaler")
        if scaler is not None and scaler_state is not None:
            scaler.load_state_dict(scaler_state)

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        # At an epoch boundary the Trainer restores the random states before the epoch's data loader
        # starts (it draws a seed); in mid-epoch, after the skipped batches, just before the next step.
        if self.rng_pending and float(state.epoch or 0).is_integer():
            self._restore_rng()

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.rng_pending:
            self._restore_rng()

    def _restore_rng(self) -> None:
        self.rng_pending = False
        states = ckpt.load_state(self.folder, "rng")
        if not states:
            warn(f"checkpoint {self.folder} has no random states; the resumed run may differ")
            return
        ckpt.restore_rng(states[min(self.process_index, len(states) - 1)])


class AyarTrainerMixin:
    """ayar's behaviour in front of any ``transformers.Trainer`` subclass (see :func:`trainer_class_for`).

    The method may replace the loss or add a term to it and choose the optimizer's param groups
    (public ``compute_loss`` and ``create_optimizer``, both falling back to ``super()``); the fault
    guard and the resume loader are callbacks. Two private methods are overridden, each because no
    public hook serves: ``_save_checkpoint`` (the checkpoint format) and ``_get_train_sampler`` (the
    example order).
    """

    def __init__(self, *args: Any, method: Method | None = None, faults: FaultGuard | None = None,
                 chunked_loss: bool = False, resumable_order: bool = True,
                 self_distill: SelfDistillation | None = None, shared_opening: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.self_distill = self_distill
        self.shared_opening = shared_opening
        self.resumable_order = resumable_order
        self.method = method if method is not None else Method()
        self.chunked_loss = chunked_loss
        self.faults = faults or FaultGuard()
        if not any(cb is self.faults for cb in self.callback_handler.callbacks):
            self.add_callback(self.faults)  # it checks each step's gradients (on_pre_optimizer_step)
        self.saved_checkpoints: list[Path] = []

    # -- the loss and the optimizer (public hooks)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        meta_names = set(META_COLUMNS) | set(self.method.model_inputs_extra())
        meta = {k: inputs[k] for k in list(inputs) if k in meta_names}
        inputs = {k: v for k, v in inputs.items() if k not in meta_names}
        replaced = self.method.compute_loss(model, inputs, meta, num_items_in_batch) if model.training else None
        if replaced is not None:
            loss, outputs = replaced
        else:
            # TRL's DPO/KTO trainers recompute the logits with an extra forward pass when asked for outputs:
            # ask only when someone reads them.
            wanted = return_outputs or type(self.method).extra_loss is not Method.extra_loss
            loss, outputs = self._task_loss(model, inputs, num_items_in_batch, wanted)
            extra = self.method.extra_loss(model, inputs, outputs) if model.training else None
            if extra is not None:
                loss = loss + extra / self._per_batch_scale(num_items_in_batch)
        if model.training and self.self_distill is not None:
            loss = loss + self.self_distill.loss(model, self.accelerator.autocast) / self._per_batch_scale(
                num_items_in_batch)
        if model.training:
            examples = meta["example_index"].tolist() if "example_index" in meta else None
            if not self.faults.check_loss(loss, self.state.global_step + 1, examples):
                loss = torch.zeros((), device=loss.device, requires_grad=True)  # backward reaches no weight
        return (loss, outputs) if return_outputs else loss

    def _per_batch_scale(self, num_items_in_batch: Any) -> int:
        """What a per-micro-batch term is divided by: the task loss is already normalised over the accumulated
        batch when the Trainer counted its items; a term added per micro-batch is not."""
        return self.args.gradient_accumulation_steps if num_items_in_batch is not None else 1

    def _task_loss(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any,
                   outputs_wanted: bool = True) -> tuple[Any, Any]:
        """The trainer's loss, or in training the same cross-entropy chunked (``train.chunked_loss``).

        The chunked loss needs the logits of no one but itself, so it is skipped for a method that adds a
        term from the model's outputs (``extra_loss``), under label smoothing, and for other architectures.
        """
        head = self._chunkable_output_layer(model) if model.training and "labels" in inputs else None
        if head is None:
            if not outputs_wanted:
                return super().compute_loss(model, inputs, False, num_items_in_batch), None
            return super().compute_loss(model, inputs, True, num_items_in_batch)
        parent, attribute, layer = head
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        with hidden_states_as_logits(parent, attribute):
            if self.shared_opening and set(model_inputs) == {"input_ids", "attention_mask"}:
                outputs = forward_with_shared_opening(model, model_inputs["input_ids"], model_inputs["attention_mask"])
            else:
                outputs = model(**model_inputs)
        count = num_items_in_batch if self.model_accepts_loss_kwargs else None  # as the model's own loss
        # accelerate autocasts the model's forward only; the head it replaced multiplied under that autocast
        # (bf16 matmuls), so the chunked loss must too, or it runs in fp32 at half the speed.
        with self.accelerator.autocast():
            loss = linear_cross_entropy(outputs.logits, layer.weight, inputs["labels"], count)
        outputs.logits = None  # hidden states, not logits: nothing downstream may read them as logits
        if self.args.average_tokens_across_devices and count is not None:
            loss = loss * self.accelerator.num_processes  # the Trainer's own scaling for a token-averaged loss
        return loss, outputs

    def _chunkable_output_layer(self, model: torch.nn.Module) -> tuple[torch.nn.Module, str, torch.nn.Linear] | None:
        if not self.chunked_loss or self.label_smoother is not None or self.compute_loss_func is not None \
                or type(self.method).extra_loss is not Method.extra_loss or not self._plain_trainer_loss():
            return None
        return output_layer(self.accelerator.unwrap_model(model))

    def _plain_trainer_loss(self) -> bool:
        """True when the loss behind this mixin is transformers' own (a TRL trainer's is not the causal LM's)."""
        return getattr(super().compute_loss, "__func__", None) is Trainer.compute_loss

    def create_optimizer(self, model=None):
        if self.optimizer is None:
            self.optimizer = method_optimizer(self.method, self.model, self.args)
        return super().create_optimizer(model) if self.optimizer is None else self.optimizer

    # -- resuming (public ``train``; the states come back through a callback)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args: Any, **kwargs: Any) -> Any:
        """The Trainer's ``train``; a resumed run loads ayar's pickle-free states, after refusing any pickle."""
        if not resume_from_checkpoint or isinstance(resume_from_checkpoint, bool):
            return super().train(resume_from_checkpoint, *args, **kwargs)
        folder = Path(resume_from_checkpoint)
        refuse_pickles(folder, "checkpoint")  # before the Trainer looks for *.bin weights or *.pt states
        loader = ResumeCheckpoint(folder, self.accelerator, self.args.process_index)
        self.add_callback(loader)
        try:
            return super().train(str(folder), *args, **kwargs)
        finally:
            self.remove_callback(loader)

    # -- the two private overrides

    def _get_train_sampler(self, train_dataset=None):
        # Private, because the Trainer builds its data loader around this one call and offers no public way
        # to pass a sampler; ayar needs one whose order a resumed run can reproduce (EpochSeededSampler).
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.resumable_order or dataset is None or not hasattr(dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        lengths = None
        if self.args.train_sampling_strategy == "group_by_length" and "length" in dataset.column_names:
            lengths = list(dataset["length"])
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededSampler(len(dataset), seed, lengths,
                                  self.args.train_batch_size * self.args.gradient_accumulation_steps)

    def _save_checkpoint(self, model, trial):
        # Private, because the Trainer has no public hook for the checkpoint format: its own writes the
        # optimizer, scheduler and random states as torch pickles, in place. Replaced (not extended): atomic,
        # safetensors + JSON. The best-checkpoint and stateful-callback bookkeeping below is the parent's.
        self.store_flos()
        parent = Path(self._get_output_dir(trial))
        step = self.state.global_step
        if self.state.best_global_step:
            best = parent / f"{ckpt.PREFIX}{self.state.best_global_step}"
            if self.state.best_global_step == step or best.is_dir():
                self.state.best_model_checkpoint = str(best)
        rng = self._gather_rng()
        for cb in [c for c in self.callback_handler.callbacks + [self.control] if isinstance(c, ExportableState)]:
            name, cb_state = cb.__class__.__name__, cb.state()
            if isinstance(self.state.stateful_callbacks[name], list):
                self.state.stateful_callbacks[name].append(cb_state)
            else:
                self.state.stateful_callbacks[name] = cb_state

        def write(folder: Path) -> None:
            unwrapped = self.accelerator.unwrap_model(self.model)
            unwrapped.save_pretrained(str(folder))
            ckpt.save_state(folder, "optimizer", self.optimizer.state_dict())
            ckpt.save_state(folder, "scheduler", self.lr_scheduler.state_dict())
            scaler = getattr(self.accelerator, "scaler", None)
            if scaler is not None:
                ckpt.save_state(folder, "scaler", scaler.state_dict())
            ckpt.save_state(folder, "rng", rng)
            self.state.save_to_json(str(folder / "trainer_state.json"))
            (folder / "training_args.json").write_text(self.args.to_json_string(), encoding="utf-8")

        path = ckpt.write_checkpoint(parent, step, write, is_main=self.args.should_save,
                                     barrier=self.accelerator.wait_for_everyone)
        self.saved_checkpoints.append(path)
        if self.args.should_save and self.args.save_total_limit:
            ckpt.rotate(parent, self.args.save_total_limit, self.state.best_model_checkpoint)

    def _gather_rng(self) -> list[Any]:
        """Every process's random states (rank order), so each rank resumes with its own."""
        state = ckpt.capture_rng()
        if self.args.world_size > 1 and torch.distributed.is_initialized():
            states: list[Any] = [None] * self.args.world_size
            torch.distributed.all_gather_object(states, state)
            return states
        return [state]


class AyarTrainer(AyarTrainerMixin, Trainer):
    """transformers' ``Trainer`` with ayar's behaviour (:class:`AyarTrainerMixin`)."""


@functools.cache
def trainer_class_for(base: type[Trainer]) -> type[Trainer]:
    """``base`` (a ``Trainer`` subclass, e.g. TRL's ``DPOTrainer``) with ayar's behaviour in front of it."""
    if base is Trainer:
        return AyarTrainer
    if issubclass(base, AyarTrainerMixin):
        return base
    return type(f"Ayar{base.__name__}", (AyarTrainerMixin, base), {"__module__": __name__})


def training_arguments(cfg: TrainConfig, output_dir: Path, seed: int, has_eval: bool,
                       args_class: type[TrainingArguments] = TrainingArguments, **extra: Any) -> TrainingArguments:
    """Map the recipe's train section onto TrainingArguments (or ``args_class``); ``extra`` fields win."""
    precision = resolve_precision(cfg.precision)
    validates = has_eval and cfg.eval_steps != 0
    eval_strategy = "no" if not validates else ("steps" if cfg.eval_steps else "epoch")
    save_strategy = "steps" if cfg.save_steps else "no"
    if cfg.load_best_model_at_end or cfg.early_stopping_patience:
        if not validates:
            raise UsageError("train.early_stopping_patience and load_best_model_at_end need a validation split "
                             "and validation passes (train.eval_steps other than 0)")
        save_strategy = eval_strategy
    values: dict[str, Any] = dict(
        output_dir=str(output_dir),
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.learning_rate,
        weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_ratio,  # a value below 1 is a ratio of the total steps
        lr_scheduler_type=cfg.scheduler,
        max_grad_norm=cfg.max_grad_norm,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps,
        save_strategy=save_strategy,
        save_steps=cfg.save_steps or cfg.eval_steps or 500,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=cfg.load_best_model_at_end or bool(cfg.early_stopping_patience),
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        activation_checkpointing=cfg.gradient_checkpointing,
        train_sampling_strategy="group_by_length" if cfg.group_by_length and not cfg.packing else "random",
        optim=cfg.optim,
        torch_compile=cfg.torch_compile,
        # gloo for multi-process CPU runs (torchrun sets WORLD_SIZE); NCCL's default on GPUs
        ddp_backend="gloo" if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available() else None,
        include_num_input_tokens_seen="non_padding",
        report_to="none",
        seed=seed,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=os.environ.get("AYAR_NO_PROGRESS") == "1",
    )
    return args_class(**in_this_version(args_class, {**values, **extra}))


def in_this_version(args_class: type, values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with each renamed field under the name the installed ``args_class`` has."""
    names = {f.name for f in dataclasses.fields(args_class)}
    return {RENAMED_ARGUMENTS[key] if key not in names and RENAMED_ARGUMENTS.get(key) in names else key: value
            for key, value in values.items()}


def prepare_model(method: Method, model: torch.nn.Module, task: str, precision: str) -> torch.nn.Module:
    """The method's model preparation, then the frozen weights stored as the precision allows (LoRA under bf16)
    and, in bf16, no cast of adapter inputs that autocast undoes and (on a CPU) attention that takes the
    faster path per row length."""
    model = method.prepare_model(model, task)
    resolved = resolve_precision(precision)
    store_frozen_weights_for(method, model, resolved)
    skip_adapter_input_casts(model, resolved)
    use_short_rows_attention(model, resolved)
    return model


@dataclass
class TrainerBuild:
    """Everything :func:`build_trainer` assembles into one Trainer.

    ``model`` is already prepared by ``method`` (``method.prepare_model``). The trainer class is the
    method's (:meth:`~ayar.methods.base.Method.trainer_spec`; ``spec`` overrides it). ``tensorboard_dir``
    adds TensorBoard, ``reporters`` the experiment trackers, ``callbacks`` anything else. ``arguments``
    are TrainingArguments fields that win over the recipe's mapping (e.g. ``disable_tqdm``).
    ``resumable_order=False`` keeps the Trainer's own sampler: for a run that writes no checkpoint to resume
    from, or a trainer whose sampler makes its batches (TRL's GRPO repeats each prompt once per sampled
    answer, in an order drawn from the seed, so a resumed GRPO run still sees the same prompts).
    """

    model: torch.nn.Module
    cfg: TrainConfig
    output_dir: Path
    train_dataset: Any
    seed: int = 0
    eval_dataset: Any = None
    data_collator: Any = None
    processing_class: Any = None
    method: Method | None = None
    callbacks: Sequence[TrainerCallback] = ()
    history: LossHistory | None = None
    faults: FaultGuard | None = None
    tensorboard_dir: Path | None = None
    reporters: Sequence[TrainerCallback] = ()
    chunked_loss: bool = False
    spec: TrainerSpec | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    resumable_order: bool = True
    self_distill: SelfDistillation | None = None
    shared_opening: bool = False


def build_trainer(build: TrainerBuild) -> Trainer:
    """The Trainer for one run: the recipe's train section as arguments, ayar's behaviour, the method's trainer.

    The trainer class is the method's with :class:`AyarTrainerMixin` in front; its callbacks are the loss
    history, the fault guard, TensorBoard, the reporters, the method's, the build's own, then early
    stopping when the recipe asks for it. Checkpoints go to ``build.output_dir``.
    """
    method = build.method if build.method is not None else Method()
    spec = build.spec or method.trainer_spec()
    cfg = build.cfg
    faults = build.faults or FaultGuard(cfg.on_nonfinite)
    args = training_arguments(cfg, build.output_dir, build.seed, build.eval_dataset is not None, spec.args_class,
                              **{**spec.args, **build.arguments})
    every: list[TrainerCallback] = [build.history or LossHistory(), faults]
    if build.tensorboard_dir is not None:
        every.append(tensorboard_callback(build.tensorboard_dir))
    every += [*build.reporters, *method.callbacks(), *build.callbacks]
    if cfg.early_stopping_patience:
        every.append(EarlyStoppingCallback(cfg.early_stopping_patience))
    trainer_class = trainer_class_for(spec.trainer_class)
    # TRL's GRPOTrainer batches its own generations and takes no collator argument at all
    collator = {"data_collator": build.data_collator} if build.data_collator is not None else {}
    return trainer_class(model=build.model, args=args, train_dataset=build.train_dataset,
                         eval_dataset=build.eval_dataset, processing_class=build.processing_class, callbacks=every,
                         method=method, faults=faults, chunked_loss=build.chunked_loss,
                         resumable_order=build.resumable_order, self_distill=build.self_distill,
                         shared_opening=build.shared_opening, **collator,
                         **spec.kwargs)
