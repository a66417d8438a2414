"""The report's charts as PNG bytes (matplotlib, no display needed)."""

from __future__ import annotations

import io
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


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


def comparison_png(comparison: dict[str, Any]) -> bytes | None:
    """Per-metric difference (b minus a) with its bootstrap interval, as error bars."""
    items = [(k, v) for k, v in comparison["metrics"].items() if v.get("n")]
    if not items:
        return None
    fig, ax = plt.subplots(figsize=(6, 0.45 * len(items) + 1.2), dpi=100)
    for row, (_name, ci) in enumerate(items):
        ax.errorbar(ci["delta"], row, xerr=[[ci["delta"] - ci["ci_low"]], [ci["ci_high"] - ci["delta"]]],
                    fmt="o", capsize=4, color="tab:green" if ci["significant"] else "tab:gray")
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(items)), [name for name, _ in items])
    ax.set(xlabel=f"{comparison['b']} minus {comparison['a']}", title="paired bootstrap interval")
    return _png(fig)
