"""Comparison mode: two models (or two runs) on the same examples, with paired bootstrap intervals.

The resampling is scipy's ``stats.bootstrap`` with ``paired=True``: the same resampled example
indices are used for both models, so the interval is for the difference, not for each side.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ayar.errors import UsageError
from ayar.run_folder import RunFolder

# Per-example scores that are resampled, and whether a larger value is better.
HIGHER_IS_BETTER = {"exact_match": True, "chrf": True, "rouge1": True, "rouge2": True, "rougeL": True,
                    "nll": False, "correct": True, "judge_score": True}


def paired_bootstrap(
    a: Sequence[float],
    b: Sequence[float],
    weights: Sequence[float] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Mean of b minus mean of a (weighted when weights are given) with a percentile bootstrap interval."""
    from scipy import stats

    a_arr, b_arr = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a_arr.shape != b_arr.shape:
        raise ValueError(f"paired scores differ in length: {a_arr.size} and {b_arr.size}")
    w_arr = np.ones_like(a_arr) if weights is None else np.asarray(weights, dtype=float)
    keep = ~(np.isnan(a_arr) | np.isnan(b_arr)) & (w_arr > 0)
    a_arr, b_arr, w_arr = a_arr[keep], b_arr[keep], w_arr[keep]
    result = {"n": int(a_arr.size), "confidence": confidence, "resamples": n_resamples}
    if a_arr.size == 0:
        return result | {"a": math.nan, "b": math.nan, "delta": math.nan, "ci_low": math.nan, "ci_high": math.nan}

    def statistic(x: np.ndarray, y: np.ndarray, w: np.ndarray, axis: int = -1) -> np.ndarray:
        return (np.sum(y * w, axis=axis) - np.sum(x * w, axis=axis)) / np.sum(w, axis=axis)

    delta = float(statistic(a_arr, b_arr, w_arr))
    if a_arr.size < 2 or np.all(a_arr == b_arr) or np.ptp(b_arr - a_arr) == 0:
        low = high = delta  # every resample gives the same difference
    else:
        boot = stats.bootstrap((a_arr, b_arr, w_arr), statistic, paired=True, vectorized=True,
                               n_resamples=n_resamples, confidence_level=confidence, method="percentile",
                               rng=np.random.default_rng(seed))
        low, high = float(boot.confidence_interval.low), float(boot.confidence_interval.high)
    return result | {"a": float(np.average(a_arr, weights=w_arr)), "b": float(np.average(b_arr, weights=w_arr)),
                     "delta": delta, "ci_low": low, "ci_high": high}


def compare_per_example(
    a: dict[str, list[float]],
    b: dict[str, list[float]],
    names: tuple[str, str] = ("base", "tuned"),
    weights: dict[str, Sequence[float]] | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap for every per-example score both sides have, and win/loss counts per metric."""
    weights = weights or {}
    metrics: dict[str, Any] = {}
    for metric in a:
        if metric not in b:
            continue
        ci = paired_bootstrap(a[metric], b[metric], weights.get(metric), n_resamples, confidence, seed)
        sign = 1 if HIGHER_IS_BETTER.get(metric, True) else -1
        diffs = [sign * (y - x) for x, y in zip(a[metric], b[metric], strict=True)
                 if not (math.isnan(x) or math.isnan(y))]
        ci |= {"b_better": sum(d > 0 for d in diffs), "a_better": sum(d < 0 for d in diffs),
               "same": sum(d == 0 for d in diffs), "higher_is_better": sign > 0,
               "significant": bool(ci["n"]) and not (ci["ci_low"] <= 0 <= ci["ci_high"])}
        metrics[metric] = ci
    return {"a": names[0], "b": names[1], "metrics": metrics}


def read_predictions(path: Path) -> dict[str, dict[str, Any]]:
    """A run's predictions.jsonl keyed by example id."""
    if not path.is_file():
        raise UsageError(f"no predictions at {path}: run `ayar eval` for that run first")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {str(row.get("id", index)): row for index, row in enumerate(rows)}


def compare_runs(run_a: Path, run_b: Path, model: str = "tuned", n_resamples: int = 1000,
                 confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Compare one model of two runs on the examples both evaluated (matched by id)."""
    rows_a = read_predictions(RunFolder(Path(run_a)).predictions)
    rows_b = read_predictions(RunFolder(Path(run_b)).predictions)
    shared = [key for key in rows_a if key in rows_b]
    if not shared:
        raise UsageError(f"runs {run_a} and {run_b} share no evaluated example ids: were they evaluated on "
                         "the same split?")
    prefix = f"{model}_"

    def scores(rows: dict[str, dict[str, Any]]) -> dict[str, list[float]]:
        keys = [k for k in rows[shared[0]] if k.startswith(prefix) and isinstance(rows[shared[0]][k], int | float)]
        return {k.removeprefix(prefix): [float(rows[i][k]) for i in shared] for k in keys}

    tokens = [float(rows_a[i].get(f"{model}_tokens", 1)) for i in shared]
    result = compare_per_example(scores(rows_a), scores(rows_b), (str(run_a), str(run_b)),
                                 {"nll": tokens}, n_resamples, confidence, seed)
    result["examples"] = len(shared)
    result["only_in_a"] = len(rows_a) - len(shared)
    result["only_in_b"] = len(rows_b) - len(shared)
    return result
