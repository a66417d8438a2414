"""One trial: the recipe with the sampled values, run as an ordinary run folder, judged on validation.

A trial prepares its data, trains (with the pruning callback when the study prunes) and, when an
objective reads the eval stage, evaluates on the validation split. Its folder is
``<sweep folder>/trials/<number>/``; its user attributes in the study name the folder, the worker
(host:pid), the steps it trained, the forgetting gate's verdict when it failed (the trial still counts:
its figures are valid, and forgetting may well be an objective) and, for a failed trial, the reason.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from transformers import TrainerCallback

from ayar.errors import AyarError, GateError
from ayar.pipeline import stage_eval, stage_prepare, stage_train
from ayar.recipe import Direction, Recipe, SweepConfig
from ayar.run_folder import RunFolder
from ayar.sweep.objective import needs_eval, objective_values, trial_figures
from ayar.sweep.space import recipe_with, sample
from ayar.sweep.workers import share_of_cores
from ayar.train.faults import TrainingStopped

# What a trial may fail with and the sweep go on: ayar's own errors (a NaN loss, a value the recipe refuses),
# running out of memory, and a failure inside a library on a sampled value.
TRIAL_FAILURES = (AyarError, torch.OutOfMemoryError, RuntimeError, ValueError)


class SweepStopped(Exception):
    """A signal stopped the trial's training: the sweep stops too, and the trial is not spent from the budget.

    Not among the failures Optuna is told to catch, so ``study.optimize`` re-raises it.
    """


@dataclass(frozen=True)
class TrialPlan:
    """What every trial of one sweep shares: the recipe to vary, its sweep section, the sweep folder and the
    worker's fixed thread count (None: its share of the machine's cores, counted before each trial)."""

    base: Recipe
    sweep: SweepConfig
    folder: Path
    threads: int | None = None

    @property
    def trials(self) -> Path:
        return self.folder / "trials"


class PruningCallback(TrainerCallback):
    """Reports each validation loss to the trial and stops training when the pruner says so.

    A maximising study gets the loss negated, so that the pruner's ranking agrees with the study's:
    pruners compare intermediate values with each other only, never with the final objective.
    """

    def __init__(self, trial: optuna.Trial, direction: Direction) -> None:
        self.trial = trial
        self.sign = -1.0 if direction == "maximize" else 1.0
        self.pruned_at: int | None = None

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict | None = None, **kwargs: Any) -> None:
        if not metrics or "eval_loss" not in metrics:
            return
        self.trial.report(self.sign * float(metrics["eval_loss"]), int(state.global_step))
        if self.trial.should_prune():
            self.pruned_at = int(state.global_step)
            control.should_training_stop = True


def trial_recipe(plan: TrialPlan, values: dict[str, Any], number: int) -> Recipe:
    """The base recipe with the sampled values, in its own run folder, evaluated on the validation split."""
    recipe = recipe_with(plan.base, values)
    recipe.run.output_dir = plan.trials
    recipe.run.name = str(number)
    recipe.eval.split = "validation"  # the test split waits for the best trial, reported apart
    recipe.train.num_threads = plan.threads or share_of_cores(plan.base.train.num_threads)
    torch.set_num_threads(recipe.train.num_threads)  # the eval stage too
    return recipe


def run_trial(trial: optuna.Trial, plan: TrialPlan) -> list[float]:
    """Run one trial and return its objective values; a failure is recorded on the trial, then raised."""
    try:
        return _run(trial, plan)
    except TrainingStopped as exc:
        raise SweepStopped(f"trial {trial.number}: {exc}") from None
    except TRIAL_FAILURES as exc:
        trial.set_user_attr("failure", f"{type(exc).__name__}: {exc}")
        raise


def _run(trial: optuna.Trial, plan: TrialPlan) -> list[float]:
    values = sample(trial, plan.sweep.space)
    trial.set_user_attr("run_dir", str(plan.trials / str(trial.number)))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    recipe = trial_recipe(plan, values, trial.number)
    trial.set_user_attr("threads", recipe.train.num_threads)
    pruning = PruningCallback(trial, plan.sweep.directions()[0]) if plan.sweep.pruner != "none" else None
    stage_prepare(recipe)
    summary = stage_train(recipe, callbacks=[pruning] if pruning else None)
    trial.set_user_attr("steps", int(summary["steps"]))
    if pruning and pruning.pruned_at is not None:
        raise optuna.TrialPruned(f"pruned at step {pruning.pruned_at} of {recipe.train.max_steps}")
    run = RunFolder(recipe.run_dir)
    if needs_eval(plan.sweep.objective):
        try:
            stage_eval(recipe, force=True)  # validation picked the checkpoint, maybe: it is what the sweep judges
        except GateError:  # the figures are written and the trial counts; the verdict goes into the table
            trial.set_user_attr("gate", "failed: " + "; ".join(run.read_metrics()["forgetting"]["gate"]["reasons"]))
    figures = trial_figures(run, recipe.train.load_best_model_at_end)
    return objective_values(figures, plan.sweep.objective)
