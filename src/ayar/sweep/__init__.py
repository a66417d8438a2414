"""Hyperparameter search over a recipe (``ayar sweep``), on Optuna.

A sweep is an Optuna study: each trial is the recipe with values from ``sweep.space``, run as an
ordinary run folder under ``<run folder>/trials/<n>/`` and judged on validation figures only. Any
number of ``ayar sweep`` processes on one storage (SQLite in the sweep folder by default, any Optuna
RDB URL, or a journal file) share the study. See docs/sweep.md.
"""

from ayar.sweep.run import SweepResult, run_sweep
from ayar.sweep.study import SweepOptions

__all__ = ["SweepOptions", "SweepResult", "run_sweep"]
