"""The training engine: a thin layer over the transformers Trainer.

Data preparation happens before this stage (``ayar.data``); here the prepared splits are
tokenized once (cached by ``datasets``), the method prepares the model, and the Trainer runs.
"""

from __future__ import annotations

import gc
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Sampler
from transformers import (
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import ExportableState
from transformers.trainer_pt_utils import get_length_grouped_indices

from ayar.data.prepare import PreparedData
from ayar.data.templates import set_template
from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.base import Method, count_parameters, method_optimizer
from ayar.methods.preference import PreferenceMethod
from ayar.models.load import load_model, load_tokenizer
from ayar.recipe import Recipe, TrainConfig
from ayar.safety import refuse_pickles
from ayar.train import checkpoint as ckpt
from ayar.train.callbacks import LossHistory
from ayar.train.faults import FaultGuard, OutOfMemory, TrainingStopped, cpu_oom_bytes, cpu_oom_error, halved
from ayar.train.loss import hidden_states_as_logits, linear_cross_entropy, output_layer
from ayar.train.packing import PackingCollator, collator_for_packing, resolve_packing
from ayar.train.precision import store_frozen_weights_for
from ayar.train.tasks import LabelMap, check_task_format, collator_for, model_kwargs_for, tokenize_split
from ayar.train.tracking import tracking_callbacks


@dataclass
class TrainResult:
    """What a training run produced and measured."""

    model_dir: Path
    final_loss: float
    steps: int
    tokens_seen: int
    tokens_per_second: float
    wall_time_s: float
    trainable_params: int
    total_params: int
    best_checkpoint: str | None = None
    packed: bool = False  # each batch's examples shared rows (train.packing)
    loss_history: list[dict[str, float]] = field(default_factory=list)
    skipped_batches: int = 0  # micro-batches dropped for a non-finite loss (train.on_nonfinite: skip)
    skipped_steps: int = 0  # optimizer steps dropped for a non-finite gradient

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly figures for metrics.json (without the per-step history)."""
        data = asdict(self)
        data.pop("loss_history")
        data["model_dir"] = str(self.model_dir)
        return data


META_COLUMNS = ("example_index", "length")  # batch columns kept for methods, never passed to the model


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

    def __iter__(self):  # noqa: ANN204
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.lengths is not None:
            return iter(get_length_grouped_indices(self.lengths, self.megabatch, generator=generator))
        return iter(torch.randperm(self.size, generator=generator).tolist())


class AyarTrainer(Trainer):
    """Trainer that lets a method replace the loss or add a term to it, guards against faults,
    and writes atomic, pickle-free checkpoints (see ``ayar.train.checkpoint``)."""

    def __init__(self, *args: Any, method: Method, faults: FaultGuard | None = None, chunked_loss: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method = method
        self.chunked_loss = chunked_loss
        self.faults = faults or FaultGuard()
        self.saved_checkpoints: list[Path] = []

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        meta_names = set(META_COLUMNS) | set(self.method.model_inputs_extra())
        meta = {k: inputs[k] for k in list(inputs) if k in meta_names}
        inputs = {k: v for k, v in inputs.items() if k not in meta_names}
        replaced = self.method.compute_loss(model, inputs, meta, num_items_in_batch) if model.training else None
        if replaced is not None:
            loss, outputs = replaced
        else:
            loss, outputs = self._task_loss(model, inputs, num_items_in_batch)
            extra = self.method.extra_loss(model, inputs, outputs) if model.training else None
            if extra is not None:
                # The task loss is already normalised over the accumulated batch; a per-batch extra term is not.
                scale = self.args.gradient_accumulation_steps if num_items_in_batch is not None else 1
                loss = loss + extra / scale
        if model.training:
            examples = meta["example_index"].tolist() if "example_index" in meta else None
            if not self.faults.check_loss(loss, self.state.global_step + 1, examples):
                loss = torch.zeros((), device=loss.device, requires_grad=True)  # backward reaches no weight
        return (loss, outputs) if return_outputs else loss

    def _task_loss(self, model: torch.nn.Module, inputs: dict[str, Any], num_items_in_batch: Any) -> tuple[Any, Any]:
        """The Trainer's loss, or in training the same cross-entropy chunked (``train.chunked_loss``).

        The chunked loss needs the logits of no one but itself, so it is skipped for a method that adds a
        term from the model's outputs (``extra_loss``), under label smoothing, and for other architectures.
        """
        head = self._chunkable_output_layer(model) if model.training and "labels" in inputs else None
        if head is None:
            return super().compute_loss(model, inputs, True, num_items_in_batch)
        parent, attribute, layer = head
        with hidden_states_as_logits(parent, attribute):
            outputs = model(**{k: v for k, v in inputs.items() if k != "labels"})
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
                or type(self.method).extra_loss is not Method.extra_loss:
            return None
        return output_layer(self.accelerator.unwrap_model(model))

    def create_optimizer(self, model=None):  # noqa: ANN001, ANN201
        if self.optimizer is None:
            self.optimizer = method_optimizer(self.method, self.model, self.args)
        return super().create_optimizer(model) if self.optimizer is None else self.optimizer

    def _get_grad_norm(self, model, grad_norm=None):  # noqa: ANN001, ANN202
        grad_norm = super()._get_grad_norm(model, grad_norm)
        self.faults.check_grad_norm(grad_norm, model, self.state.global_step + 1)
        return grad_norm

    def _get_train_sampler(self, train_dataset=None):  # noqa: ANN001, ANN202
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if dataset is None or not hasattr(dataset, "__len__"):
            return super()._get_train_sampler(train_dataset)
        lengths = None
        if self.args.train_sampling_strategy == "group_by_length" and "length" in dataset.column_names:
            lengths = list(dataset["length"])
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        return EpochSeededSampler(len(dataset), seed, lengths,
                                  self.args.train_batch_size * self.args.gradient_accumulation_steps)

    # -- checkpoints: atomic, safetensors + JSON only

    def _save_checkpoint(self, model, trial):  # noqa: ANN001, ANN202, ARG002
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

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):  # noqa: ANN001, ANN202
        refuse_pickles(resume_from_checkpoint, "checkpoint")  # before the parent looks for *.bin weights
        super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_optimizer_and_scheduler(self, checkpoint):  # noqa: ANN001, ANN202
        if checkpoint is None:
            return
        folder = Path(checkpoint)
        refuse_pickles(folder, "checkpoint")
        optimizer = ckpt.load_state(folder, "optimizer")
        if optimizer is None:
            raise ckpt.CheckpointError(f"checkpoint {folder} has no optimizer state (optimizer.json)")
        self.optimizer.load_state_dict(optimizer)
        scheduler = ckpt.load_state(folder, "scheduler")
        if scheduler is not None:
            self.lr_scheduler.load_state_dict(scheduler)

    def _load_scaler(self, checkpoint):  # noqa: ANN001, ANN202
        scaler = getattr(self.accelerator, "scaler", None)
        state = ckpt.load_state(Path(checkpoint), "scaler") if checkpoint else None
        if scaler is not None and state is not None:
            scaler.load_state_dict(state)

    def _load_rng_state(self, checkpoint):  # noqa: ANN001, ANN202
        if checkpoint is None:
            return
        states = ckpt.load_state(Path(checkpoint), "rng")
        if not states:
            print(f"warning: checkpoint {checkpoint} has no random states; the resumed run may differ")
            return
        ckpt.restore_rng(states[min(self.args.process_index, len(states) - 1)])


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, cpu_bf16: bool = True) -> str:
    """fp32/bf16/fp16 for this machine; fp16 only on CUDA (it is ~1000x slower than fp32 on CPUs).

    ``auto`` is bf16 on a GPU that has it and on a CPU with native bf16 units (AVX-512 BF16, AMX),
    where bf16 autocast trained 1.14-1.72x faster at held-out loss within 0.01% (docs/performance.md);
    fp32 elsewhere, or everywhere on a CPU with ``cpu_bf16=False``.
    """
    cuda = torch.cuda.is_available()
    if precision == "auto":
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
        return "bf16" if cpu_bf16 and cpu_has_fast_bf16() else "fp32"
    if precision == "fp16" and not cuda:
        raise UsageError("train.precision fp16 needs a CUDA GPU; use bf16 or fp32 on a CPU")
    return precision


def training_arguments(cfg: TrainConfig, output_dir: Path, seed: int, has_eval: bool) -> TrainingArguments:
    """Map the recipe's train section onto TrainingArguments."""
    precision = resolve_precision(cfg.precision)
    eval_strategy = "no" if not has_eval else ("steps" if cfg.eval_steps else "epoch")
    save_strategy = "steps" if cfg.save_steps else "no"
    if cfg.load_best_model_at_end or cfg.early_stopping_patience:
        if not has_eval:
            raise UsageError("train.early_stopping_patience and load_best_model_at_end need a validation split")
        save_strategy = eval_strategy
    return TrainingArguments(
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


def train(
    recipe: Recipe,
    base_model: str,
    prepared: PreparedData,
    run_dir: Path,
    resume: bool = False,
    extra_callbacks: list[TrainerCallback] | None = None,
) -> TrainResult:
    """Fine-tune ``base_model`` on the prepared splits with the recipe's method; save into run_dir/model.

    Raises :class:`~ayar.train.faults.TrainingStopped` (exit 75) after a SIGTERM/SIGINT checkpoint,
    :class:`~ayar.train.faults.NonFiniteError` (exit 3) on a NaN/inf loss or gradient.
    """
    preference = build_method(recipe.method.name, recipe.method.params())
    if isinstance(preference, PreferenceMethod):  # trained by its TRL trainer, on preference records
        from ayar.train.preference import train_preference

        return train_preference(recipe, base_model, prepared, run_dir, preference, resume, extra_callbacks)
    check_task_format(recipe)
    set_seed(recipe.run.seed)
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    method = build_method(recipe.method.name, recipe.method.params())
    method.preflight(recipe.task)  # before anything loads
    tokenizer = load_tokenizer(base_model, recipe.model.trust_remote_code, recipe.model.revision)
    if recipe.task == "causal_lm":
        set_template(tokenizer, recipe.data.template)
    train_records = prepared.read_split("train")
    labels = LabelMap.from_records(train_records) if recipe.task == "classification" else None
    train_set = tokenize_split(train_records, tokenizer, recipe, labels, method)
    val_records = prepared.read_split("validation")
    eval_set = tokenize_split(val_records, tokenizer, recipe, labels, method) if val_records else None

    checkpoints = run_dir / "checkpoints"
    last = _resume_point(checkpoints) if resume else None
    if not resume:
        ckpt.clean_temporary(checkpoints)
    history = LossHistory()
    faults = FaultGuard(recipe.train.on_nonfinite)
    batch, accum = recipe.train.batch_size, recipe.train.grad_accum
    start = time.perf_counter()
    while True:
        set_seed(recipe.run.seed)  # the same initial weights on a retry as on the first attempt
        trainer, (trainable, total) = _build_trainer(recipe, base_model, tokenizer, labels, train_set, eval_set,
                                                     run_dir, batch, accum, history, faults, extra_callbacks)
        try:
            with faults.signals():
                output = trainer.train(resume_from_checkpoint=str(last) if last else None)
            break
        except torch.OutOfMemoryError:
            smaller = halved(batch, accum) if recipe.train.on_oom == "halve" else None
            if smaller is None:
                raise OutOfMemory(f"out of memory at train.batch_size {batch} (grad_accum {accum}) and the "
                                  "micro-batch cannot shrink further: lower data.max_length or use a method "
                                  "with fewer trainable weights") from None
            last = trainer.saved_checkpoints[-1] if trainer.saved_checkpoints else last
            print(f"out of memory at micro-batch {batch} x grad_accum {accum}: retrying with {smaller[0]} x "
                  f"{smaller[1]} (effective batch {batch * accum} -> {smaller[0] * smaller[1]}) from "
                  f"{last.name if last else 'the start'}")
            batch, accum = smaller
            resumed = ckpt.step_of(Path(last)) if last else 0
            history.records = [r for r in history.records if r["step"] <= (resumed or 0)]
            del trainer
            _free_memory()
        except RuntimeError as exc:
            if cpu_oom_bytes(exc) is None:
                raise
            raise cpu_oom_error(exc, batch, accum) from None
    wall = time.perf_counter() - start

    step = int(trainer.state.global_step)
    if faults.signal_name and step < trainer.state.max_steps:
        where = trainer.saved_checkpoints[-1] if trainer.saved_checkpoints else checkpoints
        raise TrainingStopped(f"stopped by {faults.signal_name} at step {step}; checkpoint written to {where}; "
                              "continue with `ayar train --resume` (same recipe)")
    model_dir = run_dir / "model"
    if trainer.args.should_save:
        def write_model(folder: Path) -> None:
            trainer.model.save_pretrained(str(folder))
            tokenizer.save_pretrained(str(folder))

        ckpt.write_atomically(run_dir, "model", write_model)
    tokens = int(trainer.state.num_input_tokens_seen)
    losses = [h["loss"] for h in history.records if "loss" in h]
    result = TrainResult(
        model_dir=model_dir,
        final_loss=float(losses[-1]) if losses else math.nan,
        steps=int(output.global_step),
        tokens_seen=tokens,
        tokens_per_second=tokens / wall if wall > 0 else 0.0,
        wall_time_s=wall,
        trainable_params=trainable,
        total_params=total,
        best_checkpoint=trainer.state.best_model_checkpoint,
        packed=isinstance(trainer.data_collator, PackingCollator),
        loss_history=history.records,
        **faults.report(),
    )
    if trainer.is_world_process_zero():  # in multi-process runs only rank 0 writes
        (run_dir / "train_history.json").write_text(json.dumps(history.records, indent=1), encoding="utf-8")
    return result


def _resume_point(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint, or None (with a note) when there is none."""
    last = ckpt.find_resumable(checkpoints, warn=lambda msg: print(f"warning: {msg}"))
    print(f"resuming from {last}" if last else "no complete checkpoint to resume from: starting from the beginning")
    return last


def _build_trainer(recipe: Recipe, base_model: str, tokenizer: Any, labels: LabelMap | None, train_set: Any,
                   eval_set: Any, run_dir: Path, batch: int, accum: int, history: LossHistory, faults: FaultGuard,
                   extra_callbacks: list[TrainerCallback] | None) -> tuple[AyarTrainer, tuple[int, int]]:
    """The model, prepared by the method, inside a trainer for this micro-batch and accumulation."""
    method = build_method(recipe.method.name, recipe.method.params())
    model = load_model(base_model, recipe.task, recipe.model.trust_remote_code, recipe.model.revision,
                       recipe.model.dtype, **model_kwargs_for(recipe, tokenizer, labels),
                       **method.model_load_kwargs(recipe.task))
    model = method.prepare_model(model, recipe.task)
    store_frozen_weights_for(method, model, resolve_precision(recipe.train.precision))
    method.setup(model, tokenizer, train_set, run_dir)
    method.use_validation(eval_set)
    trainable, total = count_parameters(model)
    print(f"method {method.name}: {trainable:,} trainable of {total:,} parameters "
          f"({100 * trainable / max(total, 1):.2f}%)")
    callbacks = [history, faults, *tracking_callbacks(recipe, run_dir), *method.callbacks(),
                 *(extra_callbacks or [])]
    if recipe.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(recipe.train.early_stopping_patience))
    packed, why_not = resolve_packing(recipe.train.packing, recipe.task, model, method.model_inputs_extra())
    if recipe.task == "causal_lm":
        print("packing: on" if packed else f"packing: off ({why_not or 'train.packing: false'})")
    cfg = recipe.train.model_copy(update={"batch_size": batch, "grad_accum": accum, "packing": packed})
    trainer = AyarTrainer(
        model=model,
        args=training_arguments(cfg, run_dir / "checkpoints", recipe.run.seed, eval_set is not None),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=(collator_for_packing(recipe, tokenizer, model) if packed
                       else collator_for(recipe, tokenizer, model, method.model_inputs_extra())),
        processing_class=tokenizer,
        callbacks=callbacks,
        method=method,
        faults=faults,
        chunked_loss=recipe.task == "causal_lm" and recipe.train.chunked_loss,
    )
    return trainer, (trainable, total)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
