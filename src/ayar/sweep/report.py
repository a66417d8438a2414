"""What a sweep leaves in its folder: the trials table, best.yaml, the plots, the best trial's test figure.

``<sweep folder>/``: ``trials.csv`` and ``trials.md`` (one row per trial), ``best.yaml`` (the best trial's
full recipe, runnable with ``ayar run``; ``pareto/`` holds every Pareto trial's for several objectives),
``history.png`` and ``importance.png`` (Optuna's matplotlib plots; ``pareto.png`` for two or three
objectives), ``best_test.json`` (the best trial on the test split) and ``report.md`` tying them together.
"""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from ayar.console import warn
from ayar.recipe import Recipe, dump_recipe
from ayar.run_folder import RunFolder, json_safe
from ayar.sweep.study import best_trials

TEST_FILE = "best_test.json"
STUDY_FILE = "study.json"  # the study's name and storage, for `ayar ui`


def trial_rows(study: optuna.Study, objectives: list[str]) -> list[dict[str, Any]]:
    """One row per trial: number, state, whether it is the best (or on the Pareto front), objective values,
    parameters, steps, threads, seconds, the forgetting gate's verdict and the failure reason."""
    params = sorted({k for t in study.get_trials(deepcopy=False) for k in t.params})
    best = {t.number for t in best_trials(study)}
    mark = "best" if len(objectives) == 1 else "pareto"
    rows = []
    for t in study.get_trials(deepcopy=False):
        values = t.values if t.state == TrialState.COMPLETE and t.values else [None] * len(objectives)
        row: dict[str, Any] = {"trial": t.number, "state": t.state.name.lower(),
                               "best": mark if t.number in best else ""}
        row |= dict(zip(objectives, values, strict=True))
        row |= {k: t.params.get(k) for k in params}
        seconds = (t.datetime_complete - t.datetime_start).total_seconds() \
            if t.datetime_complete and t.datetime_start else None
        row |= {"steps": t.user_attrs.get("steps"), "threads": t.user_attrs.get("threads"), "seconds": seconds,
                "gate": t.user_attrs.get("gate", ""), "failure": t.user_attrs.get("failure", "")}
        rows.append(row)
    return rows


def write_table(rows: list[dict[str, Any]], folder: Path) -> None:
    """trials.csv and trials.md."""
    if not rows:
        return
    with (folder / "trials.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (folder / "trials.md").write_text(markdown_table(rows), encoding="utf-8")


def markdown_table(rows: list[dict[str, Any]]) -> str:
    header = list(rows[0])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(row[k]) for k in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def runnable_recipe(trial: FrozenTrial, original: Recipe, name: str) -> Recipe:
    """The trial's full recipe, put back in the original's output folder and eval split, under ``name``."""
    recipe = RunFolder(Path(trial.user_attrs["run_dir"])).read_recipe()
    recipe.run.output_dir = original.run.output_dir
    recipe.run.name = name
    recipe.eval.split = original.eval.split
    recipe.sweep = type(recipe.sweep)()  # a plain recipe: `ayar sweep` on it would search nothing
    return recipe


def write_best(study: optuna.Study, original: Recipe, folder: Path) -> list[FrozenTrial]:
    """best.yaml (and pareto/trial-<n>.yaml for several objectives); returns the best trials."""
    best = best_trials(study)
    if not best:
        return best
    dump_recipe(runnable_recipe(best[0], original, f"{original.run.name}-best"), folder / "best.yaml")
    if len(study.directions) > 1:
        (folder / "pareto").mkdir(exist_ok=True)
        for t in best:
            dump_recipe(runnable_recipe(t, original, f"{original.run.name}-trial-{t.number}"),
                        folder / "pareto" / f"trial-{t.number}.yaml")
    return best


def write_plots(study: optuna.Study, objectives: list[str], folder: Path) -> list[str]:
    """Optuna's optimisation history and parameter importances (and Pareto front); the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    first = {"target": lambda t: t.values[0], "target_name": objectives[0]} if len(objectives) > 1 else {}
    wanted = {"history.png": lambda: plots.plot_optimization_history(study, **first),
              "importance.png": lambda: plots.plot_param_importances(study, **first)}
    if 2 <= len(objectives) <= 3:
        wanted["pareto.png"] = lambda: plots.plot_pareto_front(study, target_names=objectives)
    written = []
    for name, plot in wanted.items():
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                axes = plot()
        except (ValueError, RuntimeError, ZeroDivisionError) as exc:  # too few trials, a constant parameter
            warn(f"sweep report: no {name} ({exc})")
            continue
        axes.figure.savefig(folder / name, dpi=100, bbox_inches="tight")
        plt.close(axes.figure)
        written.append(name)
    return written


def test_best(trial: FrozenTrial, folder: Path) -> dict[str, Any]:
    """The best trial's model evaluated on the test split (once per best trial): ``best_test.json``."""
    done = folder / TEST_FILE
    if done.is_file():
        previous = json.loads(done.read_text(encoding="utf-8"))
        if previous.get("trial") == trial.number:
            return previous
    from ayar.eval.evaluate import evaluate
    from ayar.pipeline import base_model_path, prepared_data

    run = RunFolder(Path(trial.user_attrs["run_dir"]))
    recipe = run.read_recipe(["eval.split=test"])
    out = folder / "best_test"
    out.mkdir(exist_ok=True)
    evaluated = evaluate(recipe, run.model, base_model_path(recipe), prepared_data(recipe), out)
    result = {"trial": trial.number, "run_dir": str(run.root), "eval": json_safe(evaluated.sections),
              "forgetting": json_safe(evaluated.forgetting)}
    done.write_text(json.dumps(result, indent=2, allow_nan=False), encoding="utf-8")
    return result


def write_report(study: optuna.Study, original: Recipe, folder: Path, test: dict[str, Any] | None) -> Path:
    """report.md: the study, the best trial (or Pareto front), its test figure, the table and the plots."""
    objectives = original.sweep.objective
    rows = trial_rows(study, objectives)
    write_table(rows, folder)
    best = write_best(study, original, folder)
    plots = write_plots(study, objectives, folder) if best else []
    out = io.StringIO()
    directions = ", ".join(f"{d.name.lower()} {o}" for d, o in zip(study.directions, objectives, strict=True))
    states = {s.name.lower(): sum(r["state"] == s.name.lower() for r in rows) for s in TrialState}
    out.write(f"# Sweep {study.study_name}\n\n{directions}; trials: "
              f"{', '.join(f'{n} {s}' for s, n in states.items() if n)}.\n\n")
    if best:
        label = "Best trial" if len(best) == 1 else f"Pareto front ({len(best)} trials; best.yaml is the first)"
        out.write(f"{label}: {', '.join(f'{t.number} {_values(t)}' for t in best)}; recipe `best.yaml`.\n\n")
    if test:
        out.write(f"Test split, trial {test['trial']} (no objective read it): {_test_line(test['eval'])}\n\n")
    out.write(markdown_table(rows) if rows else "No trials yet.\n")
    out.writelines(f"\n![{name}]({name})\n" for name in plots)
    (folder / "report.md").write_text(out.getvalue(), encoding="utf-8")
    return folder / "report.md"


def _values(trial: FrozenTrial) -> str:
    return "(" + ", ".join(f"{v:.4g}" for v in trial.values) + ")"


def _test_line(sections: dict[str, Any]) -> str:
    tuned = sections.get("tuned", {})
    figures = {k: v for k, v in tuned.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    return ", ".join(f"{k} {v:.4g}" for k, v in figures.items()) or "no figures"

