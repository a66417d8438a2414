"""The figures a trial is judged on: validation figures only, read from its run folder.

``validation.loss`` is the last validation pass of training (the lowest when the run keeps its best
checkpoint); ``eval.*`` the eval stage, which a trial runs on the validation split; ``forgetting.*`` the
forgetting probes (general material outside every split). Nothing here opens the test split.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ayar.errors import AyarError
from ayar.run_folder import RunFolder


def needs_eval(objectives: list[str]) -> bool:
    """Whether an objective reads the eval stage's figures (the forgetting probes are part of that stage)."""
    return any(path.split(".")[0] in ("eval", "forgetting") for path in objectives)


def validation_losses(run: RunFolder) -> list[tuple[int, float]]:
    """(step, validation loss) of every validation pass training logged."""
    if not run.train_history.is_file():
        return []
    records = json.loads(run.train_history.read_text(encoding="utf-8"))
    return [(int(r["step"]), float(r["eval_loss"])) for r in records if "eval_loss" in r]


def trial_figures(run: RunFolder, keeps_best: bool) -> dict[str, Any]:
    """The figures an objective path reads: ``validation``, ``eval`` (validation split) and ``forgetting``."""
    metrics = run.read_metrics()
    losses = [loss for _, loss in validation_losses(run)]
    figures: dict[str, Any] = {"validation": {}}
    if losses:
        figures["validation"]["loss"] = min(losses) if keeps_best else losses[-1]
    if "eval" in metrics:
        split = metrics["eval"].get("split", {}).get("name")
        if split != "validation":  # a guard: a trial's recipe evaluates on validation, always
            raise AyarError(f"the trial's eval figures are from the '{split}' split, not validation")
        figures["eval"] = metrics["eval"]
    if "forgetting" in metrics:
        figures["forgetting"] = metrics["forgetting"]
    return figures


def objective_values(figures: dict[str, Any], objectives: list[str]) -> list[float]:
    """The value at each objective path; an AyarError naming the path when it is missing or not finite."""
    values = []
    for path in objectives:
        node: Any = figures
        for part in path.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, bool) or not isinstance(node, int | float):
            hint = (" (no validation pass ran: does the data have a validation split?)"
                    if path == "validation.loss" else "")
            raise AyarError(f"objective '{path}' has no number in the trial's figures{hint}")
        if not math.isfinite(node):
            raise AyarError(f"objective '{path}' is {node}")
        values.append(float(node))
    return values
