"""The stages of a recipe, each a function a Python user can call: pretrain → prepare → train → eval.

Every stage reads and writes the run folder ``<run.output_dir>/<run.name>/``:
``recipe.yaml``, ``metrics.json``, ``pretrain/``, ``data/``, ``model/``, ``checkpoints/``, ``tb/``,
``loss_curve.png``, ``samples.jsonl`` and ``report.md``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from ayar.console import say
from ayar.data.prepare import PreparedData, prepare
from ayar.data.rehearsal import REHEARSAL_FILE
from ayar.errors import GateError, UsageError
from ayar.recipe import Recipe, dump_recipe


def run_dir_for(recipe: Recipe) -> Path:
    """The run folder, created on first use, with the resolved recipe written into it."""
    run_dir = recipe.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    dump_recipe(recipe, run_dir / "recipe.yaml")
    return run_dir


def _json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers and strict parsers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def update_metrics(run_dir: Path, section: str, values: Any) -> dict[str, Any]:
    """Merge one section into metrics.json and return the whole file's content."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    metrics[section] = _json_safe(values)
    path.write_text(json.dumps(metrics, indent=2, ensure_ascii=False, allow_nan=False), encoding="utf-8")
    return metrics


def base_model_path(recipe: Recipe) -> str:
    """The model to fine-tune: the recipe's model, or the one this recipe pretrained.

    A GGUF file or a ``package:`` name resolves to its plain HF folder here, so the adapter, eval,
    serve and export all name that folder as the base.
    """
    if recipe.model.name_or_path:
        from ayar.models.load import resolve_model_name

        return resolve_model_name(recipe.model.name_or_path)
    path = recipe.run_dir / "pretrain" / "model"
    if not (path / "config.json").is_file():
        raise UsageError(f"no pretrained base model at {path}: run `ayar pretrain` first or set model.name_or_path")
    return str(path)


def stage_pretrain(recipe: Recipe) -> Path:
    """Pretrain the from-scratch base model; returns its folder."""
    from ayar.eval.carbon import track_emissions
    from ayar.train.pretrain import pretrain

    run_dir = run_dir_for(recipe)
    with track_emissions(run_dir, "pretrain", recipe.run.country_iso_code, recipe.run.carbon) as emissions:
        result = pretrain(recipe.pretrain, run_dir / "pretrain", recipe.run.seed)
    _record_carbon(run_dir, "pretrain", emissions.as_dict())
    update_metrics(run_dir, "pretrain", {"final_loss": result.final_loss, "steps": result.steps,
                                         "windows": result.windows, "corpus_tokens": result.tokens_in_corpus,
                                         "wall_time_s": result.wall_time_s})
    return result.model_dir


def stage_prepare(recipe: Recipe) -> PreparedData:
    """Prepare the recipe's data into run_dir/data."""
    run_dir = run_dir_for(recipe)
    tokenizer = None  # token statistics in the data card need a tokenizer; the base's when it exists
    if recipe.model.name_or_path or (run_dir / "pretrain" / "model" / "config.json").is_file():
        from ayar.models.load import resolve_model_name

        tokenizer = resolve_model_name(base_model_path(recipe))
    prepared = prepare(recipe.data, run_dir / "data", recipe.run.seed, tokenizer=tokenizer)
    if recipe.data.rehearsal is None:
        (prepared.root / REHEARSAL_FILE).unlink(missing_ok=True)  # a stale set from an earlier recipe
    else:
        from ayar.eval.rehearsal import build_rehearsal  # the base model answers the rehearsal prompts

        build_rehearsal(recipe, base_model_path(recipe), prepared)
    return prepared


def prepared_data(recipe: Recipe) -> PreparedData:
    """The prepared data of this run; a clear error when `ayar prepare` has not run."""
    prepared = PreparedData(recipe.run_dir / "data")
    if not prepared.split_path("train").is_file():
        raise UsageError(f"no prepared data in {prepared.root}: run `ayar prepare` first")
    return prepared


def _record_carbon(run_dir: Path, stage: str, figures: dict[str, Any]) -> None:
    path = run_dir / "metrics.json"
    carbon = json.loads(path.read_text(encoding="utf-8")).get("carbon", {}) if path.is_file() else {}
    update_metrics(run_dir, "carbon", {**carbon, stage: figures})


def stage_train(recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Fine-tune the base model; returns the train figures written to metrics.json."""
    from ayar.eval.carbon import track_emissions
    from ayar.eval.report import plot_loss
    from ayar.train.engine import train

    run_dir = run_dir_for(recipe)
    with track_emissions(run_dir, "train", recipe.run.country_iso_code, recipe.run.carbon) as emissions:
        result = train(recipe, base_model_path(recipe), prepared_data(recipe), run_dir, resume=resume)
    _record_carbon(run_dir, "train", emissions.as_dict())
    plot_loss(result.loss_history, run_dir / "loss_curve.png")
    summary = result.summary()
    update_metrics(run_dir, "train", summary)
    if recipe.train.interpolate.alpha is not None:
        from ayar.eval.interpolate import apply_interpolation

        update_metrics(run_dir, "interpolate", apply_interpolation(recipe, run_dir / "model", base_model_path(recipe),
                                                                   prepared_data(recipe)))
    return summary


def stage_eval(recipe: Recipe, force: bool = False) -> dict[str, Any]:
    """Evaluate base and tuned model on the held-out split; writes metrics.json and the report.

    Refuses a split that training or checkpoint selection has seen, unless ``force``.
    """
    from ayar.eval.carbon import track_emissions
    from ayar.eval.evaluate import check_eval_split, evaluate, splits_used_for_training
    from ayar.eval.report import write_report

    check_eval_split(recipe.eval.split, splits_used_for_training(recipe), force)
    run_dir = run_dir_for(recipe)
    tuned = run_dir / "model"
    if not tuned.is_dir():
        raise UsageError(f"no trained model in {tuned}: run `ayar train` first")
    with track_emissions(run_dir, "eval", recipe.run.country_iso_code, recipe.run.carbon) as emissions:
        results = evaluate(recipe, tuned, base_model_path(recipe), prepared_data(recipe), run_dir)
    _record_carbon(run_dir, "eval", emissions.as_dict())
    forgetting = results.pop("forgetting", None)
    if forgetting is not None:
        update_metrics(run_dir, "forgetting", forgetting)
    metrics = update_metrics(run_dir, "eval", results)
    write_report(run_dir, metrics, recipe.run.name)
    if set(recipe.train.report_to) - {"tensorboard"}:
        from ayar.train.tracking import log_eval

        log_eval(recipe, run_dir, results)
    if forgetting is not None and not forgetting["gate"]["passed"]:
        raise GateError(f"forgetting gate failed: {'; '.join(forgetting['gate']['reasons'])}; the figures are in "
                        f"{run_dir / 'metrics.json'} (key 'forgetting') and the report (eval.forgetting sets the "
                        f"bounds); levers to try: {', '.join(forgetting['gate']['levers'])}")
    return results


def stage_human_eval(recipe: Recipe, sheet: Path) -> dict[str, Any]:
    """A filled blind annotation sheet, scored against its key (``<run>/annotation/``): the ``human``
    section of metrics.json and of the report."""
    from ayar.eval.human import import_sheet
    from ayar.eval.report import write_report

    run_dir = recipe.run_dir
    result = import_sheet(Path(sheet), run_dir / "annotation" / "annotation_key.json", recipe.eval.confidence)
    write_report(run_dir, update_metrics(run_dir, "human", result), recipe.run.name)
    return result


def run_all(recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Every stage of the recipe in order (ending with its export when ``export.enabled``); returns metrics.json."""
    from ayar.methods import build_method

    build_method(recipe.method.name, recipe.method.params()).preflight(recipe.task)  # fail before any stage
    if recipe.pretrain.enabled and not recipe.model.name_or_path:
        if resume and (recipe.run_dir / "pretrain" / "model" / "config.json").is_file():
            say("pretrain: reusing the pretrained base model of this run")
        else:
            stage_pretrain(recipe)
    stage_prepare(recipe)
    stage_train(recipe, resume=resume)
    stage_eval(recipe)
    if recipe.export.enabled:
        say(f"exported ({recipe.export.format}) to {stage_export(recipe)}")
    return json.loads((recipe.run_dir / "metrics.json").read_text(encoding="utf-8"))


def stage_export(recipe: Recipe) -> Path:
    """The export the recipe's ``export`` section asks for, from the run's trained model."""
    from ayar.export import export_model

    cfg = recipe.export
    out = cfg.out or recipe.run_dir / "export" / cfg.format
    return export_model(recipe.run_dir, out, cfg.format, merge=cfg.merge, gguf_dtype=cfg.gguf_dtype)
