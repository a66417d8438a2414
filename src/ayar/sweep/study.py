"""The Optuna study a sweep works on: its storage, sampler and pruner, and one worker's loop.

Every ``ayar sweep`` process is a worker: it opens the study (creating it the first time), runs trials
one after another until the study holds ``n_trials`` or the timeout passes, and leaves. Workers share
nothing but the storage, so any number of them, on one machine or many, work on one study.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from ayar.console import say
from ayar.errors import UsageError
from ayar.recipe import Recipe, SweepConfig
from ayar.sweep.space import grid_of

T = TypeVar("T")
# A heartbeat lets the next worker mark the trial of a killed worker failed (RDB storages only).
HEARTBEAT_S, GRACE_S = 60, 180


@dataclass(frozen=True)
class SweepOptions:
    """The command line's settings of one worker: each overrides the recipe's sweep section or default."""

    trials: int | None = None
    storage: str | None = None
    study: str | None = None
    threads: int | None = None


def default_storage(folder: Path) -> str:
    """SQLite in the sweep folder: enough for every worker on this machine."""
    return f"sqlite:///{(folder / 'study.db').resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB URL (sqlite:///, postgresql://, mysql://...), or ``journal:PATH`` for a journal file on a
    filesystem the workers share."""
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in url:
        raise UsageError(f"--storage '{url}' is neither a database URL (sqlite:///..., postgresql://...) "
                         "nor journal:PATH")
    # a worker waits for another's write instead of failing on a locked SQLite file
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # the heartbeat, long in use
        return retried(lambda: optuna.storages.RDBStorage(url, engine_kwargs=engine, heartbeat_interval=HEARTBEAT_S,
                                                          grace_period=GRACE_S))


def retried(make: Callable[[], T], attempts: int = 5) -> T:
    """``make()``, again after a pause when another worker creating the same tables or study got there first
    ("table ... already exists", "database is locked", a duplicate schema-version row)."""
    from sqlalchemy.exc import IntegrityError, OperationalError

    for attempt in range(attempts):
        try:
            return make()
        except (OperationalError, IntegrityError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 * (attempt + 1))
    raise AssertionError("unreachable")


def make_sampler(cfg: SweepConfig, seed: int) -> optuna.samplers.BaseSampler:
    """TPE (after a few random trials), random or grid, seeded.

    The seed mixes in the process id: workers seeded alike would propose the same values.
    """
    worker_seed = (seed * 1_000_003 + os.getpid()) % 2**32
    if cfg.sampler == "grid":
        return optuna.samplers.GridSampler(grid_of(cfg.space), seed=worker_seed)
    if cfg.sampler == "random":
        return optuna.samplers.RandomSampler(seed=worker_seed)
    startup = cfg.startup_trials or min(10, max(2, cfg.n_trials // 3))
    return optuna.samplers.TPESampler(n_startup_trials=startup, seed=worker_seed, multivariate=True)


def make_pruner(cfg: SweepConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(recipe: Recipe, storage: str, name: str) -> optuna.Study:
    """The study under ``name`` in ``storage``, created on first use; its directions must match the recipe's."""
    cfg = recipe.sweep
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # ayar prints its own line per trial, failures too
    opened = open_storage(storage)
    study = retried(lambda: optuna.create_study(
        storage=opened, study_name=name, load_if_exists=True, directions=cfg.directions(),
        sampler=make_sampler(cfg, recipe.run.seed), pruner=make_pruner(cfg)))
    stored = [d.name.lower() for d in study.directions]
    if stored != cfg.directions():
        raise UsageError(f"study '{name}' in {storage} optimises {stored}, the recipe {cfg.directions()}: "
                         "name another study (--study) or storage")
    return study


def counted(trial: FrozenTrial) -> bool:
    """A trial spent from the budget: running, finished, or failed on its own (not by an interrupted worker).

    A waiting trial (queued with ``study.enqueue_trial``, say the values a recipe ships with) is not spent
    yet: the next trial a worker starts is that one.
    """
    if trial.state == TrialState.WAITING:
        return False
    return trial.state != TrialState.FAIL or "failure" in trial.user_attrs


def trials_left(study: optuna.Study, budget: int) -> int:
    return max(0, budget - sum(counted(t) for t in study.get_trials(deepcopy=False)))


def progress_line(study: optuna.Study, trial: FrozenTrial) -> str:
    """The trial's number, values, outcome and the best so far, for the worker's console."""
    params = ", ".join(f"{k}={_short(v)}" for k, v in trial.params.items())
    if trial.state == TrialState.COMPLETE:
        outcome = "objective " + ", ".join(_short(v) for v in trial.values or [])
    elif trial.state == TrialState.PRUNED:
        outcome = f"pruned after {trial.user_attrs.get('steps', '?')} steps"
    else:
        outcome = f"failed ({trial.user_attrs.get('failure', 'interrupted')})"
    return f"trial {trial.number}: {params}: {outcome}; best so far: {best_so_far(study)}"


def best_so_far(study: optuna.Study) -> str:
    best = best_trials(study)
    if not best:
        return "none"
    if len(study.directions) == 1:
        return f"trial {best[0].number} ({_short(best[0].value)})"
    return f"Pareto front of {len(best)} (trials {', '.join(str(t.number) for t in best)})"


def best_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The best trial (one objective) or the Pareto front, trials past the forgetting gate last.

    With one objective that is the best trial that passed the gate (the best one when none did); with
    several, the front ordered by the first objective, those that passed the gate first.
    """
    sign = -1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else 1.0

    def rank(t: FrozenTrial) -> tuple[bool, float]:
        return "gate" in t.user_attrs, sign * t.values[0]

    if len(study.directions) > 1:
        return sorted(study.best_trials, key=rank)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return sorted(complete, key=rank)[:1]


def _short(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def say_progress(study: optuna.Study, trial: FrozenTrial) -> None:
    say(progress_line(study, trial))
