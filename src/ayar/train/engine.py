"""The training engine: a thin layer over the transformers Trainer.

Data preparation happens before this stage (``ayar.data``); here the prepared splits are
tokenized once (cached by ``datasets``), the method prepares the model, and the Trainer runs.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import (
    EarlyStoppingCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_utils import get_last_checkpoint

from ayar.data.prepare import PreparedData
from ayar.data.templates import set_template
from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.base import Method, count_parameters, method_optimizer
from ayar.models.load import load_model, load_tokenizer
from ayar.recipe import Recipe, TrainConfig
from ayar.train.callbacks import LossHistory, tensorboard_callback
from ayar.train.tasks import LabelMap, check_task_format, collator_for, model_kwargs_for, tokenize_split


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
    loss_history: list[dict[str, float]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The JSON-friendly figures for metrics.json (without the per-step history)."""
        data = asdict(self)
        data.pop("loss_history")
        data["model_dir"] = str(self.model_dir)
        return data


META_COLUMNS = ("example_index", "length")  # batch columns kept for methods, never passed to the model


class AyarTrainer(Trainer):
    """Trainer that lets a method replace the loss or add a term to it."""

    def __init__(self, *args: Any, method: Method, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method = method

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):  # noqa: ANN001
        meta_names = set(META_COLUMNS) | set(self.method.model_inputs_extra())
        meta = {k: inputs[k] for k in list(inputs) if k in meta_names}
        inputs = {k: v for k, v in inputs.items() if k not in meta_names}
        replaced = self.method.compute_loss(model, inputs, meta, num_items_in_batch) if model.training else None
        if replaced is not None:
            loss, outputs = replaced
            return (loss, outputs) if return_outputs else loss
        loss, outputs = super().compute_loss(model, inputs, True, num_items_in_batch)  # the task loss
        extra = self.method.extra_loss(model, inputs, outputs) if model.training else None
        if extra is not None:
            # The task loss is already normalised over the accumulated batch; a per-batch extra term is not.
            scale = self.args.gradient_accumulation_steps if num_items_in_batch is not None else 1
            loss = loss + extra / scale
        return (loss, outputs) if return_outputs else loss

    def create_optimizer(self, model=None):  # noqa: ANN001, ANN201
        if self.optimizer is None:
            self.optimizer = method_optimizer(self.method, self.model, self.args)
        return super().create_optimizer(model) if self.optimizer is None else self.optimizer


def cpu_has_fast_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, cpu_bf16: bool = False) -> str:
    """fp32/bf16/fp16 for this machine; fp16 only on CUDA (it is ~1000x slower than fp32 on CPUs).

    ``auto`` is bf16 on a GPU that has it; on a CPU it is fp32 unless ``cpu_bf16`` allows bf16
    autocast on a CPU with native bf16 units.
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
        train_sampling_strategy="group_by_length" if cfg.group_by_length else "random",
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
    """Fine-tune ``base_model`` on the prepared splits with the recipe's method; save into run_dir/model."""
    check_task_format(recipe)
    set_seed(recipe.run.seed)
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    method = build_method(recipe.method.name, recipe.method.params())
    method.preflight(recipe.task)  # e.g. qlora without CUDA stops here, before anything loads
    tokenizer = load_tokenizer(base_model, recipe.model.trust_remote_code, recipe.model.revision)
    if recipe.task == "causal_lm":
        set_template(tokenizer, recipe.data.template)
    train_records = prepared.read_split("train")
    labels = LabelMap.from_records(train_records) if recipe.task == "classification" else None
    train_set = tokenize_split(train_records, tokenizer, recipe, labels)
    val_records = prepared.read_split("validation")
    eval_set = tokenize_split(val_records, tokenizer, recipe, labels) if val_records else None

    model = load_model(base_model, recipe.task, recipe.model.trust_remote_code, recipe.model.revision,
                       recipe.model.dtype, **model_kwargs_for(recipe, tokenizer, labels),
                       **method.model_load_kwargs(recipe.task))
    model = method.prepare_model(model, recipe.task)
    method.setup(model, tokenizer, train_set, run_dir)
    trainable, total = count_parameters(model)
    print(f"method {method.name}: {trainable:,} trainable of {total:,} parameters "
          f"({100 * trainable / max(total, 1):.2f}%)")

    history = LossHistory()
    callbacks = [history, tensorboard_callback(run_dir / "tb"), *method.callbacks(), *(extra_callbacks or [])]
    if recipe.train.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(recipe.train.early_stopping_patience))
    checkpoints = run_dir / "checkpoints"
    trainer = AyarTrainer(
        model=model,
        args=training_arguments(recipe.train, checkpoints, recipe.run.seed, eval_set is not None),
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=collator_for(recipe, tokenizer, model),
        processing_class=tokenizer,
        callbacks=callbacks,
        method=method,
    )
    last = get_last_checkpoint(str(checkpoints)) if resume and checkpoints.is_dir() else None
    if resume and last is None:
        print("no checkpoint to resume from: starting from the beginning")
    start = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=last)
    wall = time.perf_counter() - start

    model_dir = run_dir / "model"
    trainer.model.save_pretrained(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
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
        loss_history=history.records,
    )
    (run_dir / "train_history.json").write_text(json.dumps(history.records, indent=1), encoding="utf-8")
    return result
