"""The `ayar iterate` stage: run v1 plus its feedback log in, the checked run v2 out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayar.console import say
from ayar.errors import UsageError
from ayar.iterate.choose import choose_method, training_records
from ayar.iterate.evaluate import feedback_eval
from ayar.iterate.feedback import Records, deduplicate, feedback_records, hold_out, replay_records
from ayar.iterate.promotion import METRICS_KEY, promotion_check
from ayar.iterate.report import write_iteration_report
from ayar.iterate.versions import merged_base, next_run_name, v2_recipe, write_jsonl
from ayar.recipe import Recipe
from ayar.run_folder import RunFolder
from ayar.serve.logging_db import read_feedback


@dataclass
class FeedbackPlan:
    """The feedback sorted for v2: what trains it, what is held out to judge it, and what was left aside."""

    records: Records  # every record the feedback gave
    skipped: dict[str, int]  # feedback rows that gave no record, by reason
    usable: Records  # records left after deduplication
    dropped: dict[str, int]  # records deduplication removed, by reason
    train: Records  # the usable records of prompts not held out
    held: Records  # the usable records of held-out prompts
    method: str  # the method v2 trains with
    trained: list[dict[str, Any]]  # the records that method trains on

    def card(self, replayed: int) -> dict[str, Any]:
        """data/card.json: the counts behind v2's training data."""
        def counts(records: Records) -> dict[str, int]:
            return {k: len(v) for k, v in records.items()}

        return {"feedback_rows": sum(len(v) for v in self.records.values()) + self.skipped["no_text"],
                "skipped": self.skipped, "dropped": self.dropped, "usable": counts(self.usable),
                "train": counts(self.train), "held_out": counts(self.held), "trained_records": len(self.trained),
                "replayed_v1_records": replayed, "method": self.method}


def plan_feedback(rows: list[dict[str, Any]], v1: Recipe, v1_train: list[dict[str, Any]],
                  v1_test: list[dict[str, Any]]) -> FeedbackPlan:
    """Feedback rows -> deduplicated records, a held-out share, the v2 method and what it trains on."""
    cfg = v1.iterate
    records, skipped = feedback_records(rows)
    usable, dropped = deduplicate(records, v1_train, v1_test)
    train_part, held = hold_out(usable, cfg.holdout, v1.run.seed)
    method = choose_method(v1, {k: len(v) for k, v in train_part.items()}, cfg.method)
    trained = training_records(method, train_part)
    if len(trained) < cfg.min_records:
        raise UsageError(f"only {len(trained)} usable feedback records for method '{method}' (iterate.min_records "
                         f"is {cfg.min_records}): feedback rows {sum(len(v) for v in records.values())}, unusable "
                         f"{skipped}, dropped {dropped}. Serve with --log-text so texts are kept.")
    return FeedbackPlan(records, skipped, usable, dropped, train_part, held, method, trained)


def write_v2_data(plan: FeedbackPlan, v1: Recipe, v2: Recipe, v1_train: list[dict[str, Any]],
                  v1_test: list[dict[str, Any]], data_dir: Path) -> dict[str, Any]:
    """v2's data folder (train, empty validation, v1's test split, held-out feedback, card); returns the card."""
    same_format = v2.data.format == v1.data.format  # v1's rows train v2 as they are (SFT after SFT)
    replayed = replay_records(v1_train, len(plan.trained), v1.iterate.replay if same_format else 0.0, v1.run.seed)
    write_jsonl(plan.trained + replayed, data_dir / "train.jsonl")
    write_jsonl([], data_dir / "validation.jsonl")
    write_jsonl(v1_test, data_dir / "test.jsonl")  # the original test split, untouched
    write_jsonl([r for items in plan.held.values() for r in items], data_dir / "feedback_heldout.jsonl")
    card = plan.card(len(replayed))
    (data_dir / "card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    say(f"iterate: {card['usable']} usable feedback records; v2 trains {plan.method} on {len(plan.trained)} "
        f"(held out {card['held_out']}) and {len(replayed)} of v1's training records; dropped {plan.dropped}")
    return card


def _drift(v1_run: RunFolder, db: Path, recipe: Recipe) -> dict[str, Any]:
    from ayar.serve.drift import check_drift

    try:
        report = check_drift(v1_run.data, db, thresholds=recipe.monitor, embeddings=recipe.iterate.drift_embeddings,
                             seed=recipe.run.seed, record=False)
    except UsageError as exc:
        return {"skipped": str(exc)}
    return report.as_dict()


def _compare(v1_run: RunFolder, v2_run: RunFolder, v1: Recipe, held: Records) -> dict[str, Any]:
    """v1 against v2 on the original test split and the held-out feedback, then the promotion check."""
    from ayar.eval.evaluate import evaluate

    eval_recipe = v1.model_copy(update={"eval": v1.eval.model_copy(update={"compare_base": True})})
    evals = evaluate(eval_recipe, v2_run.model, str(v1_run.model.resolve()), v1_run.prepared, v2_run.root)
    if evals.forgetting is not None:  # ayar.eval.forgetting: v2 ('tuned') against v1 ('base')
        v2_run.update_metrics("forgetting", evals.forgetting)
    v2_run.update_metrics("eval", evals.sections)
    fb = feedback_eval(v1_run.model, v2_run.model, held, v1)
    v2_run.update_metrics("feedback_eval", fb)
    return v2_run.update_metrics(METRICS_KEY, promotion_check(evals.sections, fb, v1.iterate, evals.forgetting))


def iterate(run: Path, db: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Turn run ``run`` and the feedback in ``db`` into run ``<run>-v2``, checked for promotion; returns its
    metrics.json."""
    from ayar.train.engine import train

    v1_run, overrides = RunFolder(Path(run)), overrides or []
    if not v1_run.is_run() or not v1_run.has_model():
        raise UsageError(f"{run} is not a trained ayar run (it needs recipe.yaml and model/): run `ayar run` first")
    v1_run.check_format()
    # iterate.* (the promotion bounds) and eval.* (how v1 and v2 are compared) apply to both; all apply to v2.
    v1 = v1_run.read_recipe([o for o in overrides if o.startswith(("iterate.", "eval."))])
    rows = read_feedback(db)
    v1_train, v1_test = v1_run.prepared.read_split("train"), v1_run.prepared.read_split("test")
    plan = plan_feedback(rows, v1, v1_train, v1_test)
    name = next_run_name(v1_run.root.name)
    v2_run = RunFolder(v1_run.root.parent / name)
    v2_run.root.mkdir(parents=True, exist_ok=True)
    base = merged_base(v1_run.model, v2_run.root / "base")
    recipe = v2_recipe(v1, name, base.resolve(), plan.method, overrides)
    v2_run.create(recipe)
    card = write_v2_data(plan, v1, recipe, v1_train, v1_test, v2_run.data)
    v2_run.update_metrics("iterate", {"v1_run": str(v1_run.root), "v2_run": str(v2_run.root), "db": str(db),
                                      "method": plan.method, "base": str(base), "card": card,
                                      "drift": _drift(v1_run, db, v1)})
    result = train(recipe, str(base.resolve()), v2_run.prepared, v2_run.root)
    v2_run.update_metrics("train", result.summary())
    metrics = _compare(v1_run, v2_run, v1, plan.held)
    write_iteration_report(v2_run.root, metrics, name)
    return metrics
