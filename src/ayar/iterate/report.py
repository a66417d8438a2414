"""The iterated run's report: the v1-against-v2 section (promotion, held-out feedback, data card, drift)
before the usual report of v1 ('base') against v2 ('tuned')."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ayar.iterate.promotion import dig, fmt, read_promotion

FEEDBACK_FIGURES = (  # (label, path in each model's block of feedback_eval)
    ("preference accuracy", ("preference", "accuracy")),
    ("margin (chosen - rejected)", ("preference", "margin_mean")),
    ("correction log-prob", ("correction_logp_mean",)),
    ("greedy answers the user wanted", ("answers_right",)),
)
KINDS = ("sft", "pairs", "kto")


def _feedback_blocks(metrics: dict[str, Any]) -> list[Any]:
    from ayar.eval.report_render import Heading, Para, Table

    fb = metrics.get("feedback_eval") or {}
    rows = []
    for label, path in FEEDBACK_FIGURES:
        v1, v2 = dig(fb, ("v1", *path)), dig(fb, ("v2", *path))
        if v1 is not None or v2 is not None:
            rows.append([label, fmt(v1), fmt(v2)])
    return [Heading(3, "Held-out feedback"), Table(["metric", "v1", "v2"], rows) if rows
            else Para("No held-out feedback.")]


def _card_blocks(info: dict[str, Any]) -> list[Any]:
    from ayar.eval.report_render import Heading, Para, Table

    card = info["card"]
    return [Heading(3, "Feedback data card"),
            Table(["", "SFT (corrections)", "pairs", "KTO (ratings)"],
                  [["usable", *(card["usable"][k] for k in KINDS)],
                   ["trained on", *(card["train"][k] for k in KINDS)],
                   ["held out", *(card["held_out"][k] for k in KINDS)]]),
            Para(f"Feedback rows {card['feedback_rows']}; unusable: {card['skipped']}; dropped: {card['dropped']}."
                 f" v2 method: {info['method']}, trained on {card['trained_records']} records.")]


def _drift_blocks(info: dict[str, Any]) -> list[Any]:
    from ayar.eval.report_render import Heading, Para

    drift = info.get("drift") or {}
    text = (f"Drift: {drift['status']} (live prompts {drift['n_live']}); scores: "
            + ", ".join(f"{k} {v:.3f}" for k, v in drift["scores"].items()) if "status" in drift
            else f"Drift not measured: {drift.get('skipped', 'no log')}")
    return [Heading(3, "Drift of the served traffic"), Para(text)]


def iteration_blocks(metrics: dict[str, Any]) -> list[Any]:
    """The report's v1-against-v2 section: promotion check, held-out feedback, data card, drift."""
    from ayar.eval.report_render import Heading, Para, Table

    info, decision = metrics["iterate"], read_promotion(metrics)
    checks = [[c["check"], fmt(c["v1"]), fmt(c["v2"]), c["bound"], "yes" if c["passed"] else "NO"]
              for c in decision["checks"]]
    return [Heading(2, f"Iteration: {info['v1_run']} (v1) -> {info['v2_run']} (v2)"),
            Para(f"Promotion: **{decision['decision'].upper()}**. " + "; ".join(decision["reasons"])),
            Table(["check", "v1", "v2", "bound", "passed"], checks),
            *_feedback_blocks(metrics), *_card_blocks(info), *_drift_blocks(info),
            Para("Below: the original test split, where 'base' is v1 and 'tuned' is v2.")]


def write_iteration_report(run_dir: Path, metrics: dict[str, Any], name: str) -> Path:
    """report.md and report.html: the iteration section, then the usual report of v1 ('base') vs v2 ('tuned')."""
    from ayar.eval.report import build_blocks
    from ayar.eval.report_render import render_html, render_markdown

    blocks = build_blocks(run_dir, metrics, name)
    blocks = blocks[:1] + iteration_blocks(metrics) + blocks[1:]
    (run_dir / "report.html").write_text(render_html(blocks, f"ayar iterate {name}"), encoding="utf-8")
    path = run_dir / "report.md"
    path.write_text(render_markdown(blocks, run_dir, "report_files"), encoding="utf-8")
    return path
