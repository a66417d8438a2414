"""A run's standard-benchmark scores (``eval.benchmarks`` in metrics.json) in the UI: on the run page each task's
main metric for base and tuned with its standard error, the drop and the ``max_drop`` verdict; on the compare
page one row per task and model."""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

# The section's own words, kept beside the section (ayar.ui.i18n holds the words every page shares)
TEXT = {
    "title": {"en": "Benchmarks (lm-evaluation-harness)", "tr": "Standart testler (lm-evaluation-harness)"},
    "headers": {"en": ["task", "metric", "base", "tuned", "drop", "examples"],
                "tr": ["görev", "ölçüt", "temel", "ince ayarlı", "düşüş", "örnek"]},
    "within": {"en": "No task fell past eval.benchmarks.max_drop (where a bound is set).",
               "tr": "Hiçbir görev eval.benchmarks.max_drop sınırını aşacak kadar düşmedi (sınır varsa)."},
    "past": {"en": "Past eval.benchmarks.max_drop: {reasons}.", "tr": "eval.benchmarks.max_drop aşıldı: {reasons}."},
}


def _text(lang: str, key: str) -> Any:
    return TEXT[key].get(lang) or TEXT[key]["en"]


def score(row: dict[str, Any] | None) -> str:
    """A task's figure as ``value ± stderr`` (``-`` where the model was not scored)."""
    from ayar.eval.report import fmt

    if not isinstance(row, dict) or row.get("value") is None:
        return "-"
    stderr = row.get("stderr")
    return fmt(row["value"]) + (f" ± {fmt(stderr)}" if stderr is not None else "")


def task_rows(benchmarks: dict[str, Any]) -> list[list[Any]]:
    """One row per task: name, metric, base and tuned scores, the drop, the examples scored."""
    from ayar.eval.report import fmt

    rows = []
    for name, row in (benchmarks.get("tasks") or {}).items():
        tuned = row.get("tuned") or {}
        rows.append([name, tuned.get("metric", "?"), score(row.get("base")), score(tuned), fmt(row.get("drop")),
                     tuned.get("n", "-")])
    return rows


def benchmarks_section(lang: str, metrics: dict[str, Any], table: Callable[[list[str], list[list[Any]], str], str]
                       ) -> str:
    """The run page's benchmarks section, its table drawn by the page's ``table``; nothing for a run without."""
    from ayar.eval.report import section

    benchmarks = section(metrics, "benchmarks")
    if not isinstance(benchmarks, dict) or not benchmarks.get("tasks"):
        return ""
    return (f"<h2>{escape(_text(lang, 'title'))}</h2>"
            + table(_text(lang, "headers"), task_rows(benchmarks), "benchmarks-table")
            + f"<p>{escape(_verdict(lang, benchmarks))}</p>")


def _verdict(lang: str, benchmarks: dict[str, Any]) -> str:
    if benchmarks.get("reasons"):
        return _text(lang, "past").format(reasons="; ".join(benchmarks["reasons"]))
    return _text(lang, "within")


def compare_rows(lang: str, all_metrics: list[dict[str, Any]]) -> list[list[Any]]:
    """The compare table's rows: each task's score per model, one column per run (``-`` where a run lacks it)."""
    from ayar.eval.report import section

    runs = [b if isinstance(b := section(m, "benchmarks"), dict) else {} for m in all_metrics]
    names = list(dict.fromkeys(name for b in runs for name in b.get("tasks") or {}))
    models = dict(zip(("base", "tuned"), _text(lang, "headers")[2:4], strict=True))
    return [[f"{name} ({label})"] + [score(((b.get("tasks") or {}).get(name) or {}).get(model)) for b in runs]
            for name in names for model, label in models.items()]
