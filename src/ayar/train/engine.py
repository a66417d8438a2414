"""The fine-tuning stage: a recipe's prepared data, base model and method, trained.

Data preparation happens before this stage (``ayar.data``). The method names the kind of run it
trains with (supervised, preference...: :data:`ayar.train.lifecycle.RUN_KINDS`), and
:func:`ayar.train.lifecycle.run_training` runs it: the same setup, fitting (with the out-of-memory
retry), saving and result for every kind.
"""

from __future__ import annotations

from pathlib import Path

from transformers import TrainerCallback

from ayar.data.prepare import PreparedData
from ayar.methods import build_method
from ayar.recipe import Recipe
from ayar.train.lifecycle import RunSetup, TrainResult, run_kind, run_training
from ayar.train.precision import resolve_precision
from ayar.train.trainer import AyarTrainer, training_arguments

# The trainer's names stay importable from here, for older code.
__all__ = ["AyarTrainer", "TrainResult", "resolve_precision", "train", "training_arguments"]


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
    method = build_method(recipe.method.name, recipe.method.params())
    run = run_kind(method.training_run)(recipe, base_model, prepared, method)
    setup = RunSetup(run_dir, recipe.train, recipe.run.seed, resume, list(extra_callbacks or ()))
    return run_training(run, setup)
