"""Paired bootstrap and run comparison."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.eval.compare import compare_per_example, compare_runs, paired_bootstrap


def test_bootstrap_interval_on_fixed_seed() -> None:
    a = [0.0] * 50
    b = [1.0] * 25 + [0.0] * 25
    first = paired_bootstrap(a, b, n_resamples=2000, seed=7)
    assert first["delta"] == pytest.approx(0.5)
    # the binomial standard error is 0.0707: a 95% interval is about +-0.14
    assert 0.33 < first["ci_low"] < 0.42
    assert 0.58 < first["ci_high"] < 0.67
    assert paired_bootstrap(a, b, n_resamples=2000, seed=7) == first


def test_bootstrap_seed_changes_continuous_interval() -> None:
    a = [i / 10 for i in range(30)]
    b = [x + (i % 7) / 5 for i, x in enumerate(a)]
    one, again, other = (paired_bootstrap(a, b, seed=s) for s in (1, 1, 2))
    assert one == again
    assert one["ci_low"] != other["ci_low"]
    assert one["ci_low"] < one["delta"] < one["ci_high"]


def test_bootstrap_pairs_examples() -> None:
    # large per-example spread, constant difference: a paired interval is a point
    a = [float(i) for i in range(40)]
    b = [x + 1.0 for x in a]
    result = paired_bootstrap(a, b, seed=0)
    assert result["delta"] == result["ci_low"] == result["ci_high"] == pytest.approx(1.0)


def test_bootstrap_weighted_mean() -> None:
    result = paired_bootstrap([1.0, 3.0], [2.0, 3.0], weights=[3, 1], seed=0)
    assert result["a"] == pytest.approx((3 * 1 + 3) / 4)
    assert result["delta"] == pytest.approx(3 / 4)


def test_bootstrap_rejects_unpaired() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap([1.0], [1.0, 2.0])


def test_compare_counts_wins_and_direction() -> None:
    result = compare_per_example({"nll": [2.0, 2.0, 1.0], "exact_match": [0.0, 1.0, 0.0]},
                                 {"nll": [1.0, 1.0, 1.0], "exact_match": [1.0, 1.0, 0.0]}, seed=0)
    nll, em = result["metrics"]["nll"], result["metrics"]["exact_match"]
    assert (nll["b_better"], nll["a_better"], nll["same"]) == (2, 0, 1)  # lower nll is better
    assert (em["b_better"], em["a_better"], em["same"]) == (1, 0, 2)


def _predictions(path: Path, scores: dict[str, list[float]]) -> None:
    path.mkdir()
    rows = [{"id": f"r{i}", **{f"tuned_{k}": v[i] for k, v in scores.items()}} for i in range(len(scores["chrf"]))]
    (path / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def test_compare_two_runs(tmp_path: Path) -> None:
    _predictions(tmp_path / "a", {"chrf": [10.0, 20.0, 30.0, 40.0]})
    _predictions(tmp_path / "b", {"chrf": [20.0, 30.0, 40.0, 50.0]})
    result = compare_runs(tmp_path / "a", tmp_path / "b", seed=0)
    assert result["examples"] == 4
    assert result["metrics"]["chrf"]["delta"] == pytest.approx(10.0)
    assert result["metrics"]["chrf"]["significant"]


def test_compare_runs_without_predictions(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with pytest.raises(UsageError, match="ayar eval"):
        compare_runs(tmp_path / "a", tmp_path / "a")
