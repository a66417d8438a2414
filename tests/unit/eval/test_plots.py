"""The report's comparison figure: each score's scale on its own axis."""

from __future__ import annotations

import matplotlib.pyplot as plt

from ayar.eval.compare import compare_per_example
from ayar.eval.plots import comparison_figure, comparison_png, score_scale


def _comparison() -> dict:
    base = {"exact_match": [0.0, 0.0, 1.0, 0.0], "rougeL": [0.2, 0.1, 0.9, 0.3], "chrf": [10.0, 20.0, 90.0, 30.0]}
    tuned = {"exact_match": [1.0, 0.0, 1.0, 1.0], "rougeL": [0.8, 0.4, 0.9, 0.7], "chrf": [60.0, 45.0, 95.0, 70.0]}
    return compare_per_example(base, tuned, seed=0)


def _axis_of(fig: object, score: str) -> object:
    return next(ax for ax in fig.axes if score in [label.get_text() for label in ax.get_yticklabels()])


def test_chrf_gets_its_own_axis_apart_from_the_0_1_scores() -> None:
    fig = comparison_figure(_comparison())
    try:
        assert len(fig.axes) == 2
        shares, chrf = _axis_of(fig, "exact_match"), _axis_of(fig, "chrf")
        assert shares is not chrf and _axis_of(fig, "rougeL") is shares
        assert [label.get_text() for label in chrf.get_yticklabels()] == ["chrf"]
        assert "0-1" in shares.get_xlabel() and "0-100" in chrf.get_xlabel()
        assert shares.get_xlim()[1] - shares.get_xlim()[0] < 2  # not stretched to chrF's tens of points
        low, high = chrf.get_xlim()
        assert low < 20 < 40 < high  # chrF's interval (differences of 25 to 50 points) fits its own axis
        assert not fig.axes[0].get_shared_x_axes().joined(shares, chrf)
    finally:
        plt.close(fig)


def test_one_scale_stays_one_axis_and_nothing_compared_gives_no_figure() -> None:
    only_shares = _comparison()
    del only_shares["metrics"]["chrf"]
    fig = comparison_figure(only_shares)
    try:
        assert len(fig.axes) == 1 and fig.axes[0].get_title() == "paired bootstrap interval"
        assert [label.get_text() for label in fig.axes[0].get_yticklabels()] == ["exact_match", "rougeL"]
    finally:
        plt.close(fig)
    assert comparison_png({"a": "base", "b": "tuned", "metrics": {"chrf": {"n": 0}}}) is None
    assert comparison_png(_comparison()).startswith(b"\x89PNG")


def test_scales() -> None:
    assert score_scale("chrf") != score_scale("exact_match") == score_scale("rouge1") == score_scale("correct")
    assert len({score_scale("nll"), score_scale("chrf"), score_scale("judge_score"), score_scale("correct")}) == 4
