"""One worker of a sweep, start to end: check the recipe, open the study, run trials, write the report."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch

from ayar.console import say
from ayar.errors import AyarError, UsageError
from ayar.recipe import Recipe, dump_recipe
from ayar.sweep.report import test_best, write_report
from ayar.sweep.space import check_space
from ayar.sweep.study import SweepOptions, best_trials, default_storage, open_study, say_progress, trials_left
from ayar.sweep.trial import TRIAL_FAILURES, TrialPlan, run_trial


@dataclass
class SweepResult:
    """Where the sweep's study and report are, and its best trials (number and objective values)."""

    folder: Path
    storage: str
    study: str
    best: list[tuple[int, list[float]]] = field(default_factory=list)
    test: dict[str, Any] | None = None

    @property
    def report(self) -> Path:
        return self.folder / "report.md"


def run_sweep(recipe: Recipe, options: SweepOptions | None = None) -> SweepResult:
    """Run trials of ``recipe`` on its study until the study holds ``sweep.n_trials``; write the report.

    Several processes calling this on one storage share the study (the trials are Optuna's to hand out).
    """
    options = options or SweepOptions()
    recipe = sweep_recipe(recipe, options)
    folder = recipe.run_dir
    folder.mkdir(parents=True, exist_ok=True)
    dump_recipe(recipe, folder / "sweep.yaml")
    storage = options.storage or default_storage(folder)
    study = open_study(recipe, storage, options.study or recipe.run.name)
    plan = TrialPlan(trial_base(recipe, options.threads), recipe.sweep, folder)
    _optimize(study, plan)
    best = best_trials(study)
    if not best:
        write_report(study, recipe, folder, None)
        raise AyarError(f"no trial of study '{study.study_name}' completed: see {folder / 'trials.md'}")
    test = test_best(best[0], folder) if recipe.sweep.test_best else None
    write_report(study, recipe, folder, test)
    return SweepResult(folder, storage, study.study_name, [(t.number, list(t.values)) for t in best], test)


def sweep_recipe(recipe: Recipe, options: SweepOptions) -> Recipe:
    """The recipe with the command line's trial count; a UsageError for a sweep that cannot run."""
    recipe = recipe.model_copy(deep=True)
    if options.trials is not None:
        recipe.sweep.n_trials = options.trials
    if not recipe.sweep.space:
        raise UsageError("the recipe has no sweep.space: name the recipe keys to search (see docs/sweep.md)")
    if recipe.data.split.validation == 0:
        raise UsageError("a sweep judges trials on the validation split, and data.split.validation is 0")
    check_space(recipe)
    return recipe


def trial_base(recipe: Recipe, threads: int | None) -> Recipe:
    """The recipe every trial starts from: validation passes on, the worker's thread count, no sweep section."""
    base = recipe.model_copy(deep=True)
    base.sweep = type(base.sweep)()
    if base.train.eval_steps == 0:
        base.train.eval_steps = max(1, base.train.max_steps // 4) if base.train.max_steps > 0 else None
        every = f"every {base.train.eval_steps} steps" if base.train.eval_steps else "once per epoch"
        say(f"sweep: the recipe has no validation pass (train.eval_steps 0); trials validate {every}, "
            "since the objective and the pruner read validation figures")
    threads = threads or base.train.num_threads or os.cpu_count() or 1
    base.train.num_threads = threads
    torch.set_num_threads(threads)  # the eval stage too
    return base


def _optimize(study: optuna.Study, plan: TrialPlan) -> None:
    budget = plan.sweep.n_trials
    left = trials_left(study, budget)
    if not left:
        say(f"sweep: study '{study.study_name}' already holds {budget} trials (raise --trials to run more)")
        return

    def stop_when_full(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trials_left(study, budget) == 0:  # other workers' trials count too
            study.stop()

    study.optimize(lambda trial: run_trial(trial, plan), n_trials=left, timeout=plan.sweep.timeout,
                   catch=TRIAL_FAILURES, callbacks=[say_progress, stop_when_full])
