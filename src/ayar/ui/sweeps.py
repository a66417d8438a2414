"""Sweeps in the UI: the sweep folders under the runs folder, each with its trials, best trial and plots.

A sweep folder (``ayar sweep``) holds ``sweep.yaml``; its trials are run folders under ``trials/<n>/``,
whose pages are the ordinary run pages under the name ``<sweep>/trials/<n>``. The trials are read live
from the study when its storage is readable from here (``study.json`` names it: SQLite in the folder, a
journal file, a database URL without a password), else from ``trials.csv`` of the worker's last report.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import yaml

from ayar.ui import pages
from ayar.ui import runs as R
from ayar.ui.i18n import t

SWEEP_FILE = "sweep.yaml"
SWEEP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
TRIAL_NAME = re.compile(r"^(?P<sweep>[A-Za-z0-9_][A-Za-z0-9_.\-]*)/trials/(?P<number>\d+)$")
FILES = {"report.md", "best.yaml", "trials.csv", "trials.md", "history.png", "importance.png", "pareto.png"}
PLOTS = ("pareto.png", "history.png", "importance.png")
# the trials table's columns after the objectives and parameters (trial_rows in ayar.sweep.report)
AFTER = ("steps", "threads", "seconds", "gate", "failure")


@dataclass
class SweepView:
    """A sweep as the UI shows it: its objectives and one row per trial (as the sweep's trials table)."""

    name: str
    path: Path
    objectives: list[str]
    directions: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    live: bool = False  # read from the study itself, not from the last report's table

    @property
    def best(self) -> list[int]:
        return [int(r["trial"]) for r in self.rows if r.get("best")]

    def count(self, state: str) -> int:
        return sum(r.get("state") == state for r in self.rows)


def is_sweep_dir(path: Path) -> bool:
    return path.is_dir() and (path / SWEEP_FILE).is_file()


def list_sweep_dirs(root: Path) -> list[Path]:
    """Sweep folders directly under ``root``, newest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if SWEEP_NAME.match(p.name) and is_sweep_dir(p)]
    return sorted(found, key=lambda p: (p / SWEEP_FILE).stat().st_mtime, reverse=True)


def trial_dir(root: Path, name: str) -> Path | None:
    """The run folder a trial name (``<sweep>/trials/<n>``) points to, or None for any other name."""
    found = TRIAL_NAME.match(name)
    if found is None or not is_sweep_dir(root / found["sweep"]):
        return None
    path = root / found["sweep"] / "trials" / found["number"]
    return path if R.is_run_dir(path) else None


def read_sweep(path: Path) -> SweepView:
    """The sweep in ``path``: its objectives from sweep.yaml, its trials from the study or trials.csv."""
    from ayar.recipe import SweepConfig

    data = yaml.safe_load((path / SWEEP_FILE).read_text(encoding="utf-8")) or {}
    cfg = SweepConfig.model_validate(data.get("sweep") or {})
    view = SweepView(path.name, path, list(cfg.objective), list(cfg.directions()))
    rows = _study_rows(path, view.objectives)
    view.live = rows is not None
    view.rows = rows if rows is not None else _table_rows(path, view.objectives)
    return view


def _study_rows(path: Path, objectives: list[str]) -> list[dict[str, Any]] | None:
    """The trials from the study's storage; None when it cannot be read from here."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    from ayar.sweep.report import STUDY_FILE, trial_rows
    from ayar.sweep.study import open_storage

    recorded = R.read_json(path / STUDY_FILE, {}) or {}
    storage = recorded.get("storage") or (f"sqlite:///{path / 'study.db'}" if (path / "study.db").is_file() else None)
    if not storage:
        return None
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        opened = open_storage(storage)
        names = [recorded["study"]] if recorded.get("study") else optuna.get_all_study_names(opened)
        if len(names) != 1:
            return None
        return trial_rows(optuna.load_study(study_name=names[0], storage=opened), objectives)
    except (SQLAlchemyError, ImportError, KeyError, ValueError, OSError):  # gone, no driver, no such study
        return None


def _table_rows(path: Path, objectives: list[str]) -> list[dict[str, Any]]:
    """trials.csv of the last report, its numbers as numbers."""
    try:
        with (path / "trials.csv").open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError:
        return []
    for row in rows:
        for key in ("trial", *objectives):
            row[key] = _number(row.get(key))
    return rows


def _number(text: Any) -> Any:
    if text in (None, ""):
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        return text
    return int(value) if value.is_integer() and "." not in str(text) else value


def pareto_series(view: SweepView) -> dict[str, Any]:
    """The first two objectives of every complete trial, the Pareto front apart, for the UI's chart script."""
    x, y = view.objectives[:2]
    points = [(r, [r[x], r[y]]) for r in view.rows if r.get("state") == "complete"
              and isinstance(r.get(x), int | float) and isinstance(r.get(y), int | float)]
    front = sorted(p for r, p in points if r.get("best"))
    running = view.count("running") > 0
    return {"status": "running" if running else "done", "axes": [x, y],
            "series": {"trials": [p for r, p in points if not r.get("best")], "Pareto front": front}}


# ---------------------------------------------------------------- pages


def sweeps_page(lang: str, root: Path, views: list[SweepView]) -> str:
    title = t(lang, "sweeps")
    if not views:
        return pages.layout(lang, title, f"<h1>{escape(title)}</h1><p>{escape(t(lang, 'no_sweeps', root=str(root)))}"
                            "</p>", "sweeps")
    headers = [t(lang, "name"), t(lang, "objectives"), t(lang, "trials"), t(lang, "best_trial")]
    rows = [[f'<a href="/sweeps/{escape(v.name)}">{escape(v.name)}</a>', escape(_objectives(v)),
             escape(_states(lang, v)), escape(", ".join(str(n) for n in v.best))] for v in views]
    body = f"<h1>{escape(title)}</h1>" + pages.table(headers, rows, "sweeps-table", sortable=True, raw=True)
    return pages.layout(lang, title, body, "sweeps")


def sweep_page(lang: str, view: SweepView, runs_root: Path) -> str:
    name = escape(view.name)
    files = [f for f in ("report.md", "best.yaml", "trials.csv") if (view.path / f).is_file()]
    links = " · ".join(f'<a href="/sweeps/{name}/files/{f}">{f}</a>' for f in files)
    source = t(lang, "sweep_live") if view.live else t(lang, "sweep_from_table")
    parts = [f"<h1>{escape(t(lang, 'sweep'))} {name}</h1>",
             f"<p>{escape(_objectives(view))} · {escape(_states(lang, view))} · {escape(source)}"
             f"{' · ' + links if links else ''}</p>"]
    if len(view.objectives) > 1:
        x, y = view.objectives[:2]
        parts.append(f"<h2>{escape(t(lang, 'pareto_front'))}</h2>"
                     f'<div class="chart" id="pareto-chart" data-src="/api/sweeps/{name}/pareto" data-scatter="1" '
                     f'data-line="Pareto front" data-xlabel="{escape(x)}" data-ylabel="{escape(y)}"></div>')
    parts.append(f"<h2>{escape(t(lang, 'trials'))}</h2>")
    parts.append(_trials_form(lang, view, runs_root) if view.rows else f"<p>{escape(t(lang, 'no_trials'))}</p>")
    plots = [p for p in PLOTS if (view.path / p).is_file()]
    parts += [f'<figure><img alt="{p}" src="/sweeps/{name}/files/{p}"><figcaption>{p}</figcaption></figure>'
              for p in plots]
    return pages.layout(lang, f"{t(lang, 'sweep')} {view.name}", "\n".join(parts), "sweeps")


def _trials_form(lang: str, view: SweepView, runs_root: Path) -> str:
    """The trials table: each trial linked to its run page, the best marked; ticked trials go to /compare."""
    params = [k for k in view.rows[0] if k not in ("trial", "state", "best", *view.objectives, *AFTER)]
    headers = ["", t(lang, "trial"), t(lang, "status"), t(lang, "best_trial"), *view.objectives, *params, *AFTER]
    mark = t(lang, "best_mark") if len(view.objectives) == 1 else t(lang, "pareto_mark")
    rows = []
    for r in view.rows:
        run = f"{view.name}/trials/{r['trial']}"
        linked = trial_dir(runs_root, run) is not None
        rows.append([f'<input type="checkbox" name="runs" value="{escape(run)}">' if linked else "",
                     f'<a href="/runs/{escape(run)}">{r["trial"]}</a>' if linked else escape(str(r["trial"])),
                     escape(str(r.get("state") or "")),
                     f'<b class="best">{escape(mark)}</b>' if r.get("best") else "",
                     *(_cell(r.get(k)) for k in (*view.objectives, *params, *AFTER))])
    return ('<form action="/compare" method="get">'
            + pages.table(headers, rows, "trials-table", sortable=True, raw=True)
            + f'<button type="submit">{escape(t(lang, "compare"))}</button></form>')


def _cell(value: Any) -> str:
    text = pages.fmt(value) if isinstance(value, int | float) and not isinstance(value, bool) else str(value or "")
    sort = f' data-sort="{value:.10g}"' if isinstance(value, int | float) and not isinstance(value, bool) else ""
    return f"<span{sort}>{escape(text)}</span>"


def _objectives(view: SweepView) -> str:
    return ", ".join(f"{d} {o}" for d, o in zip(view.directions, view.objectives, strict=False))


def _states(lang: str, view: SweepView) -> str:
    states = ("complete", "pruned", "fail", "running")
    counted = [f"{view.count(s)} {s}" for s in states if view.count(s)]
    return f"{len(view.rows)} {t(lang, 'trials').lower()}" + (f" ({', '.join(counted)})" if counted else "")
