"""The run report: every figure comes from metrics.json, laid out as blocks rendered to report.md and report.html.

One list of blocks feeds both files, so the Markdown and the HTML page never disagree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar.eval.plots import comparison_png, confusion_png, histogram_png, loss_curve_png
from ayar.eval.report_render import Heading, Image, Para, Table, fmt, render_html, render_markdown
from ayar.eval.report_sections import (
    benchmark_blocks,
    error_blocks,
    forgetting_blocks,
    human_blocks,
    judge_blocks,
    preference_blocks,
    risk_blocks,
    sample_blocks,
)
from ayar.run_folder import RunFolder

MODEL_ORDER = ("base", "tuned")
COUNTS = {"examples", "response_tokens"}  # sizes, not scores: no delta


def plot_loss(history: list[dict[str, float]], path: Path, title: str = "training loss") -> Path | None:
    """Training (and validation) loss against step, as a PNG file; None when nothing was logged."""
    png = loss_curve_png(history, title)
    if png is None:
        return None
    path.write_bytes(png)
    return path


def section(metrics: dict[str, Any], key: str) -> Any:
    """A section at the top level of metrics.json or inside its eval section."""
    if key in metrics:
        return metrics[key]
    return (metrics.get("eval") or {}).get(key)


def model_blocks(evals: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-model figure blocks of the eval section, base first."""
    blocks = {k: v for k, v in evals.items() if isinstance(v, dict) and "perplexity" in v}
    return dict(sorted(blocks.items(), key=lambda kv: MODEL_ORDER.index(kv[0]) if kv[0] in MODEL_ORDER else 9))


def metric_table(evals: dict[str, Any], comparison: dict[str, Any] | None) -> Table:
    """One row per metric, one column per model, and the tuned-minus-base delta with its interval."""
    models = model_blocks(evals)
    names = list(models)
    metrics = [k for block in models.values() for k, v in block.items()
               if isinstance(v, int | float) and not isinstance(v, bool) or v is None]
    metrics = list(dict.fromkeys(metrics))
    paired = (comparison or {}).get("metrics", {})
    headers = ["metric", *names] + (["delta", "CI"] if len(names) == 2 else [])
    rows = []
    for metric in metrics:
        row = [metric] + [fmt(models[n].get(metric)) for n in names]
        if len(names) == 2:
            a, b = models[names[0]].get(metric), models[names[1]].get(metric)
            numeric = isinstance(a, int | float) and isinstance(b, int | float)
            delta = b - a if numeric and metric not in COUNTS else None
            ci = paired.get(metric)
            row += ["" if delta is None else fmt(delta), f"[{fmt(ci['ci_low'])}, {fmt(ci['ci_high'])}]" if ci else ""]
        rows.append(row)
    return Table(headers, rows, table_id="metric-table")


def comparison_blocks(comparison: dict[str, Any]) -> list[Any]:
    a, b = comparison["a"], comparison["b"]
    rows = [[name, fmt(ci["a"]), fmt(ci["b"]), fmt(ci["delta"]), f"[{fmt(ci['ci_low'])}, {fmt(ci['ci_high'])}]",
             fmt(ci["significant"]), f"{ci['b_better']} / {ci['a_better']} / {ci['same']}"]
            for name, ci in comparison["metrics"].items()]
    first = next(iter(comparison["metrics"].values()), {})
    out: list[Any] = [
        Heading(2, f"Comparison: {b} versus {a}"),
        Para(f"Per-example scores on the same examples; {fmt(first.get('confidence', 0.95) * 100)}% paired "
             f"bootstrap intervals ({first.get('resamples', '')} resamples) for {b} minus {a}. nll is "
             "token-weighted; lower is better."),
        Table(["score", a, b, "delta", "CI", "significant", f"{b} better / {a} better / same"], rows,
              table_id="comparison-table"),
    ]
    png = comparison_png(comparison)
    if png:
        out.append(Image("difference with bootstrap interval", png, "comparison.png"))
    return out


def training_blocks(run_dir: Path, metrics: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    train = metrics.get("train") or {}
    if train:
        out += [Heading(2, "Training"),
                Table(["figure", "value"], [[k, fmt(v)] for k, v in train.items() if not isinstance(v, dict | list)])]
    history = train.get("loss_history")
    run = RunFolder(run_dir)
    if history is None and run.train_history.is_file():
        history = json.loads(run.train_history.read_text(encoding="utf-8"))
    png = loss_curve_png(history) if history else None
    if png is None and run.loss_curve.is_file():
        png = run.loss_curve.read_bytes()
    if png:
        out.append(Image("loss curve", png, "loss_curve.png"))
    return out


def carbon_blocks(carbon: dict[str, Any]) -> list[Any]:
    rows = [[stage, fmt(c.get("energy_kwh")), fmt(c.get("co2_kg")), fmt(c.get("duration_s")),
             c.get("country_iso_code", ""), c.get("power_source") or c.get("error") or ""]
            for stage, c in carbon.items() if isinstance(c, dict)]
    return [Heading(2, "Carbon (codecarbon, offline)"),
            Table(["stage", "energy (kWh)", "CO2 (kg)", "duration (s)", "country", "power"], rows,
                  table_id="carbon-table")]


def chart_blocks(evals: dict[str, Any]) -> list[Any]:
    out: list[Any] = []
    labels = {"nll": "per-example loss (nll)", "chrf": "per-example chrF"}
    for key, hist in (evals.get("histograms") or {}).items():
        out.append(Image(f"histogram of {labels.get(key, key)}", histogram_png(hist, labels.get(key, key)),
                         f"hist_{key}.png"))
    for name, block in model_blocks(evals).items():
        if "confusion_matrix" in block:
            out.append(Image(f"confusion matrix ({name})", confusion_png(block["labels"], block["confusion_matrix"],
                                                                         name), f"confusion_{name}.png"))
    return [Heading(2, "Charts"), *out] if out else []


def build_blocks(run_dir: Path, metrics: dict[str, Any], name: str) -> list[Any]:
    """Every block of the report, in reading order."""

    evals = metrics.get("eval") or {}
    blocks: list[Any] = [Heading(1, f"ayar run {name}")]
    split = evals.get("split") or {}
    if model_blocks(evals):
        blocks += [Heading(2, f"Evaluation on the held-out '{split.get('name', 'test')}' split"),
                   Para(f"{split.get('examples', '?')} examples, never used for training or checkpoint selection."),
                   metric_table(evals, section(metrics, "comparison"))]
    if section(metrics, "comparison"):
        blocks += comparison_blocks(section(metrics, "comparison"))
    if any(isinstance(block, dict) and "preference" in block for block in model_blocks(evals).values()):
        blocks += preference_blocks(model_blocks(evals))
    if section(metrics, "forgetting"):
        blocks += forgetting_blocks(section(metrics, "forgetting"))
    if evals.get("benchmarks"):
        blocks += benchmark_blocks(evals["benchmarks"])
    if section(metrics, "judge"):
        blocks += judge_blocks(section(metrics, "judge"))
    if section(metrics, "human"):
        blocks += human_blocks(section(metrics, "human"))
    blocks += training_blocks(run_dir, metrics)
    blocks += chart_blocks(evals)
    if section(metrics, "error_analysis"):
        blocks += error_blocks(section(metrics, "error_analysis"))
    blocks += [Heading(2, "Risks")]
    if section(metrics, "carbon"):
        blocks += carbon_blocks(section(metrics, "carbon"))
    else:
        blocks.append(Para("Carbon: not tracked for this run (set run.carbon: true)."))
    if section(metrics, "risks"):
        blocks += risk_blocks(section(metrics, "risks"))
    blocks += sample_blocks(run_dir)
    return blocks


def write_report(run_dir: Path, metrics: dict[str, Any], recipe_name: str) -> Path:
    """Write report.md (images under report_files/) and the self-contained report.html; returns report.md."""
    blocks = build_blocks(run_dir, metrics, recipe_name)
    RunFolder(run_dir).report_html.write_text(render_html(blocks, f"ayar run {recipe_name}"), encoding="utf-8")
    path = RunFolder(run_dir).report_md
    path.write_text(render_markdown(blocks, run_dir, "report_files"), encoding="utf-8")
    return path
