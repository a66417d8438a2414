"""The run report: a loss-curve PNG and report.md that a person reads to see what happened."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402


def plot_loss(history: list[dict[str, float]], path: Path, title: str = "training loss") -> Path | None:
    """Training (and validation) loss against step, as a PNG; None when nothing was logged."""
    train = [(h["step"], h["loss"]) for h in history if "loss" in h]
    val = [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]
    if not train:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(*zip(*train, strict=True), label="train")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def eval_table(evals: dict[str, dict[str, Any]]) -> list[str]:
    """A markdown table with one column per evaluated model."""
    names = list(evals)
    metrics = [k for k in evals[names[0]] if isinstance(evals[names[0]][k], int | float)]
    lines = ["| metric | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for metric in metrics:
        lines.append(f"| {metric} | " + " | ".join(_fmt(evals[n].get(metric, "")) for n in names) + " |")
    return lines


def write_report(run_dir: Path, metrics: dict[str, Any], recipe_name: str) -> Path:
    """Write report.md from metrics.json's content, the loss curve and the first samples."""
    lines = [f"# ayar run `{recipe_name}`", ""]
    train = metrics.get("train", {})
    if train:
        lines += ["## Training", "", "| figure | value |", "|---|---|"]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in train.items() if not isinstance(v, dict | list)]
        lines.append("")
    if (run_dir / "loss_curve.png").is_file():
        lines += ["![loss curve](loss_curve.png)", ""]
    if metrics.get("eval"):
        lines += ["## Evaluation (held-out test split)", "", *eval_table(metrics["eval"]), ""]
    samples = run_dir / "samples.jsonl"
    if samples.is_file():
        lines += ["## Samples", "", "| prompt | reference | base | tuned |", "|---|---|---|---|"]
        for raw in samples.read_text(encoding="utf-8").splitlines()[:10]:
            row = json.loads(raw)
            cells = [row.get("prompt", ""), row.get("reference", ""), row.get("base_output", ""),
                     row.get("tuned_output", "")]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
        lines.append("")
    path = run_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
