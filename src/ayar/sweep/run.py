"""One worker of a sweep, start to end: check the recipe, open the study, run trials, write the report."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from ayar.console import say
from ayar.errors import AyarError, UsageError
from ayar.recipe import Recipe, dump_recipe
from ayar.sweep.report import STUDY_FILE, test_best, write_report
from ayar.sweep.space import check_space
from ayar.sweep.study import SweepOptions, best_trials, default_storage, open_study, say_progress, trials_left
from ayar.sweep.trial import TRIAL_FAILURES, SweepStopped, TrialPlan, run_trial
from ayar.sweep.workers import live_workers, machine_cores, registered_worker
from ayar.train.faults import TrainingStopped


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
    write_study_file(folder, storage, study.study_name)
    plan = TrialPlan(trial_base(recipe), recipe.sweep, folder, options.threads)
    with registered_worker():
        say(f"sweep: study '{study.study_name}' in {without_password(storage)}; {threads_note(plan)}")
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


def trial_base(recipe: Recipe) -> Recipe:
    """The recipe every trial starts from: validation passes on, no sweep section."""
    base = recipe.model_copy(deep=True)
    base.sweep = type(base.sweep)()
    if base.train.eval_steps == 0:
        base.train.eval_steps = max(1, base.train.max_steps // 4) if base.train.max_steps > 0 else None
        every = f"every {base.train.eval_steps} steps" if base.train.eval_steps else "once per epoch"
        say(f"sweep: the recipe has no validation pass (train.eval_steps 0); trials validate {every}, "
            "since the objective and the pruner read validation figures")
    return base


def threads_note(plan: TrialPlan) -> str:
    """How this worker picks its thread count, for its first line."""
    if plan.threads:
        return f"threads per trial: {plan.threads} (--threads)"
    cap = f", at most train.num_threads {plan.base.train.num_threads}" if plan.base.train.num_threads else ""
    return (f"threads per trial: the {machine_cores()} cores divided by the sweep workers running on this machine "
            f"(now {live_workers()}){cap}, counted again before each trial")


def write_study_file(folder: Path, storage: str, study: str) -> None:
    """study.json: the study's name and storage, for `ayar ui` to read the trials live.

    A storage URL with a password is not written (the UI then reads the trials table of the last report).
    """
    shown = storage if without_password(storage) == storage else None
    (folder / STUDY_FILE).write_text(json.dumps({"study": study, "storage": shown}, indent=2), encoding="utf-8")


def without_password(storage: str) -> str:
    """The storage URL with its password masked, for the console and the sweep folder."""
    if "://" not in storage:
        return storage
    from sqlalchemy.engine import make_url

    url = make_url(storage)
    return url.render_as_string(hide_password=True) if url.password else storage


def _optimize(study: optuna.Study, plan: TrialPlan) -> None:
    budget = plan.sweep.n_trials
    left = trials_left(study, budget)
    if not left:
        say(f"sweep: study '{study.study_name}' already holds {budget} trials (raise --trials to run more)")
        return

    def stop_when_full(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trials_left(study, budget) == 0:  # other workers' trials count too
            study.stop()

    try:
        study.optimize(lambda trial: run_trial(trial, plan), n_trials=left, timeout=plan.sweep.timeout,
                       catch=TRIAL_FAILURES, callbacks=[say_progress, stop_when_full])
    except SweepStopped as exc:
        raise TrainingStopped(f"sweep stopped ({exc}); run the same `ayar sweep` again to go on: the stopped "
                              "trial is not counted") from None
