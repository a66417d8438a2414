"""One training-run lifecycle for every kind of training: setup, fit, save, result.

A kind of training (supervised fine-tuning, preference tuning, pretraining from scratch...) is a
:class:`TrainingRun`: it says what differs (the recipe checks, the tokenizer, the datasets, the Trainer
for one micro-batch size, what the saved model folder holds beyond weights and tokenizer).
:func:`run_training` owns the rest, the same for all of them:

- setup: seed, threads, the tokenizer, the resume point (or a clean checkpoint folder);
- fitting: under the SIGTERM/SIGINT guard, retried with a halved micro-batch on out-of-memory;
- saving: the model folder written atomically, the loss history beside it;
- the result: :class:`TrainResult`.

A fine-tuning method names its kind (:attr:`ayar.methods.base.Method.training_run`) and
:data:`RUN_KINDS` resolves the name, so a new kind is one module plus one line here. Pretraining from
scratch has no method: the pretrain stage runs its kind directly.
"""

from __future__ import annotations

import gc
import importlib
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
from ayar.methods import build_method
from ayar.methods.base import Method, count_parameters
from ayar.models.load import load_tokenizer
from ayar.recipe import Recipe, TrainConfig
from ayar.run_folder import RunFolder
from ayar.tasks import get_task
from ayar.train import checkpoint as ckpt
from ayar.train.callbacks import LossHistory
from ayar.train.faults import FaultGuard, OutOfMemory, TrainingStopped, cpu_oom_bytes, cpu_oom_error, halved
from ayar.train.packing import PackingCollator

# Each kind of training by the name a method gives (Method.training_run): "module:Class", imported on use.
RUN_KINDS = {
    "supervised": "ayar.train.supervised:SupervisedRun",
    "preference": "ayar.train.preference:PreferenceRun",
    "grpo": "ayar.train.grpo:GrpoRun",
}


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


@dataclass
class RunSetup:
    """Where and how one run trains: the folder, the train section, the seed, resuming, extra callbacks."""

    run_dir: Path
    train: TrainConfig
    seed: int
    resume: bool = False
    callbacks: list[TrainerCallback] = field(default_factory=list)

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)

    @property
    def checkpoints(self) -> Path:
        return self.folder.checkpoints


@dataclass
class Fitted:
    """A finished ``trainer.train()``: the trainer, its output and the wall time it took."""

    trainer: Trainer
    output: Any
    wall: float
    trainable: int
    total: int


class TrainingRun:
    """What one kind of training supplies to :func:`run_training`; subclasses fill in the hooks."""

    def check(self) -> None:
        """Refuse, with a UsageError, what this kind cannot train; runs before anything loads."""

    def tokenizer(self) -> Any:
        """The tokenizer (with its chat template where the task has one)."""
        raise NotImplementedError

    def prepare_data(self, tokenizer: Any) -> None:
        """Build the datasets the trainer will read (once: the out-of-memory retry reuses them)."""

    def build_trainer(self, setup: RunSetup, tokenizer: Any, batch: int, accum: int, history: LossHistory,
                      faults: FaultGuard) -> Trainer:
        """A fresh model inside a Trainer for this micro-batch and accumulation."""
        raise NotImplementedError

    def after_out_of_memory(self) -> None:
        """Drop state the failed attempt left (e.g. build a fresh method object)."""

    def write_model(self, trainer: Trainer, tokenizer: Any, folder: Path) -> None:
        """The saved model folder: weights and tokenizer; a kind adds what loading it again needs."""
        trainer.model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))

    def describe(self, trainer: Trainer) -> str:
        """What trains, for the line that counts its parameters."""
        return "model"


class MethodRun(TrainingRun):
    """A fine-tuning method on a base model and the prepared splits: what every method's kind shares.

    A kind adds its recipe checks (:meth:`check_recipe`), its datasets and its Trainer.
    """

    chat_template_always = True  # False: the template is set only for tasks that have one

    def __init__(self, recipe: Recipe, base_model: str, prepared: PreparedData, method: Method) -> None:
        self.recipe, self.base_model, self.prepared, self.method = recipe, base_model, prepared, method

    def check_recipe(self) -> None:
        """Refuse, with a UsageError, a recipe this kind cannot train."""

    def check(self) -> None:
        self.check_recipe()
        self.method.preflight(self.recipe.task)

    def tokenizer(self) -> Any:
        model = self.recipe.model
        tokenizer = load_tokenizer(self.base_model, model.trust_remote_code, model.revision)
        if self.chat_template_always or get_task(self.recipe.task).chat:
            set_template(tokenizer, self.recipe.data.template, self.recipe.data.enable_thinking)
        return tokenizer

    def after_out_of_memory(self) -> None:
        self.method = build_method(self.recipe.method.name, self.recipe.method.params())  # no state from the failed try

    def describe(self, trainer: Trainer) -> str:
        return f"method {self.method.name}"


def library_trainer(trainer: Trainer) -> str:
    """The library's trainer class an ayar trainer extends (TRL's DPOTrainer, say), by name."""
    return next((c.__name__ for c in type(trainer).__mro__ if not c.__module__.startswith("ayar.")),
                type(trainer).__name__)


def run_kind(name: str) -> type[TrainingRun]:
    """The TrainingRun class registered under ``name``."""
    module, _, attribute = RUN_KINDS[name].partition(":")
    return getattr(importlib.import_module(module), attribute)


def run_training(run: TrainingRun, setup: RunSetup) -> TrainResult:
    """Set up, fit (with the out-of-memory retry), save run_dir/model and measure one training run.

    Raises :class:`~ayar.train.faults.TrainingStopped` (exit 75) after a SIGTERM/SIGINT checkpoint,
    :class:`~ayar.train.faults.NonFiniteError` (exit 3) on a NaN/inf loss or gradient.
    """
    run.check()
    set_seed(setup.seed)
    if setup.train.num_threads:
        torch.set_num_threads(setup.train.num_threads)
    tokenizer = run.tokenizer()
    run.prepare_data(tokenizer)
    history, faults = LossHistory(), FaultGuard(setup.train.on_nonfinite)
    fitted = _fit(run, setup, tokenizer, history, faults, _resume_point(setup))
    _stop_if_signalled(fitted.trainer, faults, setup.checkpoints)
    trainer, folder = fitted.trainer, setup.folder
    if trainer.args.should_save:
        ckpt.write_atomically(setup.run_dir, "model", lambda model_dir: run.write_model(trainer, tokenizer, model_dir))
    if trainer.is_world_process_zero():  # in multi-process runs only rank 0 writes
        folder.train_history.write_text(json.dumps(history.records, indent=1), encoding="utf-8")
    return _result(fitted, folder.model, history, faults)


def _resume_point(setup: RunSetup) -> Path | None:
    """The newest complete checkpoint when resuming (None, with a note, when there is none); else a clean folder."""
    if not setup.resume:
        ckpt.clean_temporary(setup.checkpoints)
        return None
    last = ckpt.find_resumable(setup.checkpoints, warn=warn)
    say(f"resuming from {last}" if last else "no complete checkpoint to resume from: starting from the beginning")
    return last


def _fit(run: TrainingRun, setup: RunSetup, tokenizer: Any, history: LossHistory, faults: FaultGuard,
         last: Path | None) -> Fitted:
    """``trainer.train()``, retried from the last checkpoint with half the micro-batch on out-of-memory."""
    batch, accum = setup.train.batch_size, setup.train.grad_accum
    start = time.perf_counter()
    while True:
        set_seed(setup.seed)  # the same initial weights on a retry as on the first attempt
        trainer = run.build_trainer(setup, tokenizer, batch, accum, history, faults)
        parameters = count_parameters(trainer.model)  # before training: gradual unfreezing changes it
        _say_parameters(run.describe(trainer), *parameters)
        try:
            with faults.signals():
                output = trainer.train(resume_from_checkpoint=str(last) if last else None)
            return Fitted(trainer, output, time.perf_counter() - start, *parameters)
        except torch.OutOfMemoryError:
            batch, accum, last = _smaller_batch(setup.train.on_oom, batch, accum, trainer, last)
            history.records = [r for r in history.records if r["step"] <= (ckpt.step_of(last) if last else 0)]
            del trainer
            _free_memory()
            run.after_out_of_memory()
        except RuntimeError as exc:
            if cpu_oom_bytes(exc) is None:
                raise
            raise cpu_oom_error(exc, batch, accum) from None


def _say_parameters(what: str, trainable: int, total: int) -> None:
    say(f"{what}: {trainable:,} trainable of {total:,} parameters ({100 * trainable / max(total, 1):.2f}%)")


def _smaller_batch(on_oom: str, batch: int, accum: int, trainer: Trainer, last: Path | None
                   ) -> tuple[int, int, Path | None]:
    """The halved micro-batch (doubled accumulation) and the checkpoint to retry from; OutOfMemory if none."""
    smaller = halved(batch, accum) if on_oom == "halve" else None
    if smaller is None:
        raise OutOfMemory(f"out of memory at train.batch_size {batch} (grad_accum {accum}) and the "
                          "micro-batch cannot shrink further: lower data.max_length or use a method "
                          "with fewer trainable weights")
    last = Path(trainer.saved_checkpoints[-1]) if trainer.saved_checkpoints else last
    say(f"out of memory at micro-batch {batch} x grad_accum {accum}: retrying with {smaller[0]} x "
        f"{smaller[1]} (effective batch {batch * accum} -> {smaller[0] * smaller[1]}) from "
        f"{last.name if last else 'the start'}")
    return smaller[0], smaller[1], last


def _stop_if_signalled(trainer: Trainer, faults: FaultGuard, checkpoints: Path) -> None:
    """TrainingStopped when a signal ended the run before its last step (its checkpoint is written)."""
    step = int(trainer.state.global_step)
    if faults.signal_name and step < trainer.state.max_steps:
        where = trainer.saved_checkpoints[-1] if trainer.saved_checkpoints else checkpoints
        raise TrainingStopped(f"stopped by {faults.signal_name} at step {step}; checkpoint written to {where}; "
                              "continue with `ayar train --resume` (same recipe)")


def _result(fitted: Fitted, model_dir: Path, history: LossHistory, faults: FaultGuard) -> TrainResult:
    trainer, wall = fitted.trainer, fitted.wall
    tokens = int(trainer.state.num_input_tokens_seen or 0)
    losses = [h["loss"] for h in history.records if "loss" in h]
    return TrainResult(
        model_dir=model_dir,
        final_loss=float(losses[-1]) if losses else math.nan,
        steps=int(fitted.output.global_step),
        tokens_seen=tokens,
        tokens_per_second=tokens / wall if wall > 0 else 0.0,
        wall_time_s=wall,
        trainable_params=fitted.trainable,
        total_params=fitted.total,
        best_checkpoint=trainer.state.best_model_checkpoint,
        packed=isinstance(trainer.data_collator, PackingCollator),
        loss_history=history.records,
        **faults.report(),
    )


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
