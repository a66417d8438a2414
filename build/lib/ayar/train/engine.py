"""The fine-tuning stage: a recipe's prepared data, base model and method, trained.

Data preparation happens before this stage (``ayar.data``); here the prepared splits are
tokenized once (cached by ``datasets``), the method prepares the model, and the Trainer that
:func:`ayar.train.trainer.build_trainer` assembles runs (retried with a smaller micro-batch on
out-of-memory when the recipe allows it).
"""

from __future__ import annotations

import gc
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, set_seed

from ayar.console import say, warn
from ayar.data.prepare import PreparedData
from ayar.data.templates import set_template
from ayar.errors import UsageError
from ayar.methods import build_method
from ayar.methods.base import Method, count_parameters
from ayar.methods.preference import PreferenceMethod
from ayar.models.load import is_adapter_dir, load_model, load_tokenizer, save_head_config
from ayar.models.template_contract import write_contract
from ayar.recipe import Recipe
from ayar.tasks import get_task
from ayar.train import checkpoint as ckpt
from ayar.train.callbacks import LossHistory
from ayar.train.faults import FaultGuard, OutOfMemory, TrainingStopped, cpu_oom_bytes, cpu_oom_error, halved
from ayar.train.packing import PackingCollator, collator_for_packing, resolve_packing
from ayar.train.precision import resolve_precision
from ayar.train.self_distill import SelfDistillation
from ayar.train.tasks import LabelMap, check_task_format, collator_for, model_kwargs_for, tokenize_split
from ayar.train.tracking import tracking_callbacks
from ayar.train.trainer import AyarTrainer, build_trainer, prepare_model, training_arguments

# The trainer's names stay importable from here, for older code.
__all__ = ["AyarTrainer", "TrainResult", "resolve_precision", "train", "training_arguments"]


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
    if isinstance(preference, PreferenceMethod):  # TRL's trainer on preference records (train/preference.py)
        from ayar.train.preference import train_preference

        return TrainResult(**train_preference(recipe, base_model, prepared, run_dir, preference, resume,
                                              extra_callbacks))
    check_task_format(recipe)
    set_seed(recipe.run.seed)
    if recipe.train.num_threads:
        torch.set_num_threads(recipe.train.num_threads)
    method = build_method(recipe.method.name, recipe.method.params())
    method.preflight(recipe.task)  # before anything loads; this object trains (a fresh one after out-of-memory)
    tokenizer = load_tokenizer(base_model, recipe.model.trust_remote_code, recipe.model.revision)
    task = get_task(recipe.task)
    if task.chat:
        set_template(tokenizer, recipe.data.template)
    train_records = prepared.read_split("train")
    if recipe.data.rehearsal is not None:
        train_records = train_records + _rehearsal(prepared)
    labels = LabelMap.from_records(train_records) if task.label_map else None
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
        trainer, (trainable, total) = _build_trainer(recipe, method, base_model, tokenizer, labels, train_set,
                                                     eval_set, run_dir, batch, accum, history, faults,
                                                     extra_callbacks)
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
            say(f"out of memory at micro-batch {batch} x grad_accum {accum}: retrying with {smaller[0]} x "
                  f"{smaller[1]} (effective batch {batch * accum} -> {smaller[0] * smaller[1]}) from "
                  f"{last.name if last else 'the start'}")
            batch, accum = smaller
            resumed = ckpt.step_of(Path(last)) if last else 0
            history.records = [r for r in history.records if r["step"] <= (resumed or 0)]
            del trainer
            _free_memory()
            method = build_method(recipe.method.name, recipe.method.params())  # no state from the failed try
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
            if labels is not None and is_adapter_dir(folder):  # the adapter's head needs its labels to load again
                save_head_config(trainer.model, folder)
            write_contract(folder, tokenizer, tools_used=any(r.get("tools") for r in train_records))  # checked by serve/batch/export

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


def _rehearsal(prepared: PreparedData) -> list[dict[str, Any]]:
    """The base model's answers that ``data.rehearsal`` mixes into training (written by prepare)."""
    records = prepared.read_rehearsal()
    if records is None:  # e.g. `ayar iterate`'s v2 data, which holds feedback records only
        warn(f"data.rehearsal is set but {prepared.root} holds no rehearsal records (`ayar prepare` writes "
             "them): training without rehearsal")
        return []
    say(f"rehearsal: {len(records)} rows of the base model's own answers mixed into {prepared.root.name}/train")
    return records


def _resume_point(checkpoints: Path) -> Path | None:
    """The newest complete checkpoint, or None (with a note) when there is none."""
    last = ckpt.find_resumable(checkpoints, warn=warn)
    say(f"resuming from {last}" if last else "no complete checkpoint to resume from: starting from the beginning")
    return last


def _build_trainer(recipe: Recipe, method: Method, base_model: str, tokenizer: Any, labels: LabelMap | None,
                   train_set: Any, eval_set: Any, run_dir: Path, batch: int, accum: int, history: LossHistory,
                   faults: FaultGuard, extra_callbacks: list[TrainerCallback] | None) -> tuple[Trainer, tuple[int, int]]:
    """The model, prepared by the method, inside a trainer for this micro-batch and accumulation."""
    model = load_model(base_model, recipe.task, recipe.model.trust_remote_code, recipe.model.revision,
                       recipe.model.dtype, **model_kwargs_for(recipe, tokenizer, labels),
                       **method.model_load_kwargs(recipe.task))
    model = prepare_model(method, model, recipe.task, recipe.train.precision)
    method.setup(model, tokenizer, train_set, run_dir)
    method.use_validation(eval_set)
    trainable, total = count_parameters(model)
    say(f"method {method.name}: {trainable:,} trainable of {total:,} parameters "
          f"({100 * trainable / max(total, 1):.2f}%)")
    packed, why_not = resolve_packing(recipe.train.packing, recipe.task, model, method.model_inputs_extra())
    next_token = get_task(recipe.task).next_token
    if next_token:
        say("packing: on" if packed else f"packing: off ({why_not or 'train.packing: false'})")
    cfg = recipe.train.model_copy(update={"batch_size": batch, "grad_accum": accum, "packing": packed})
    trainer = build_trainer(
        model, cfg, run_dir / "checkpoints", train_set, seed=recipe.run.seed, eval_dataset=eval_set,
        data_collator=(collator_for_packing(recipe, tokenizer, model) if packed
                       else collator_for(recipe, tokenizer, model, method.model_inputs_extra())),
        processing_class=tokenizer, method=method, callbacks=extra_callbacks or (), history=history, faults=faults,
        reporters=tracking_callbacks(recipe, run_dir), chunked_loss=next_token and recipe.train.chunked_loss,
        self_distill=_self_distillation(recipe, model, tokenizer),
    )
    return trainer, (trainable, total)


def _self_distillation(recipe: Recipe, model: torch.nn.Module, tokenizer: Any) -> SelfDistillation | None:
    """The KL term toward the base (``train.self_distill``), for chat causal LMs; None when its weight is 0."""
    if recipe.train.self_distill.weight == 0:
        return None
    if not get_task(recipe.task).chat:
        raise UsageError(f"train.self_distill keeps a chat model's general behaviour; task '{recipe.task}' has none")
    return SelfDistillation(model, tokenizer, recipe.train.self_distill, recipe.run.seed)


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
