"""The report's charts as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def loss_curve_png(history: list[dict[str, float]], title: str = "training loss") -> bytes | None:
    """Training (and validation) loss against step; None when nothing was logged."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h and "step" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h and "step" in h]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*train, strict=True), marker=".", label="train")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    return _png(fig)


def histogram_png(hist: dict[str, Any], xlabel: str) -> bytes:
    """Overlaid per-model histograms from shared bin edges and counts."""
    edges = hist["edges"]
    widths = [b - a for a, b in zip(edges[:-1], edges[1:], strict=True)]
    fig, ax = plt.subplots(figsize=(6, 3.2), dpi=100)
    for name, counts in hist["counts"].items():
        ax.bar(edges[:-1], counts, width=widths, align="edge", alpha=0.5, label=name)
    ax.set(xlabel=xlabel, ylabel="examples")
    ax.legend()
    return _png(fig)


def confusion_png(labels: list[str], matrix: list[list[int]], title: str) -> bytes:
    """A labelled confusion matrix (rows: true label, columns: predicted)."""
    import numpy as np
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(3.5, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size), dpi=100)
    ConfusionMatrixDisplay(np.array(matrix), display_labels=labels).plot(ax=ax, colorbar=False)
    ax.set_title(title)
    return _png(fig)


# The unit of each per-example score's difference; scores of one unit share an axis, the rest are 0-1 shares.
SCORE_SCALES = {"chrf": "chrF points, 0-100", "nll": "nats per token", "judge_score": "judge score, 1-10"}
SHARE_SCALE = "share, 0-1"


def score_scale(name: str) -> str:
    """The scale a comparison score is on (chrF's 0-100 points, a 0-1 share, ...)."""
    return SCORE_SCALES.get(name, SHARE_SCALE)


def comparison_figure(comparison: dict[str, Any]) -> Any | None:
    """Per-metric difference (b minus a) with its bootstrap interval, as error bars: one subplot per scale,
    so that a chrF difference of 30 points does not flatten an exact-match difference of 0.3."""
    items = [(k, v) for k, v in comparison["metrics"].items() if v.get("n")]
    if not items:
        return None
    scales: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for name, ci in items:
        scales.setdefault(score_scale(name), []).append((name, ci))
    fig, axes = plt.subplots(len(scales), 1, figsize=(6, 0.45 * len(items) + 1.2 + 0.7 * (len(scales) - 1)),
                             dpi=100, squeeze=False, height_ratios=[len(rows) + 1 for rows in scales.values()])
    for ax, (scale, rows) in zip(axes[:, 0], scales.items(), strict=True):
        for row, (_name, ci) in enumerate(rows):
            ax.errorbar(ci["delta"], row, xerr=[[ci["delta"] - ci["ci_low"]], [ci["ci_high"] - ci["delta"]]],
                        fmt="o", capsize=4, color="tab:green" if ci["significant"] else "tab:gray")
        ax.axvline(0, color="black", linewidth=0.8)
        ax.set_yticks(range(len(rows)), [name for name, _ in rows])
        ax.set(xlabel=f"{comparison['b']} minus {comparison['a']} ({scale})")
    axes[0, 0].set_title("paired bootstrap interval")
    return fig


def comparison_png(comparison: dict[str, Any]) -> bytes | None:
    """The comparison figure (see comparison_figure) as PNG; None when no score was compared."""
    fig = comparison_figure(comparison)
    return None if fig is None else _png(fig)
