"""The stages of a recipe, each a function a Python user can call: pretrain → prepare → train → eval.

Every stage reads and writes the run folder ``<run.output_dir>/<run.name>/``, whose layout
:class:`~ayar.run_folder.RunFolder` owns.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ayar.console import say
from ayar.data.prepare import PreparedData, prepare
from ayar.data.rehearsal import REHEARSAL_FILE
from ayar.errors import GateError, UsageError
from ayar.recipe import Recipe
from ayar.run_folder import RunFolder

if TYPE_CHECKING:
    from transformers import TrainerCallback


def run_folder_for(recipe: Recipe) -> RunFolder:
    """The recipe's run folder, created on first use, with the resolved recipe written into it."""
    return RunFolder(recipe.run_dir).create(recipe)


def run_dir_for(recipe: Recipe) -> Path:
    """The path of the recipe's run folder, created on first use (see :func:`run_folder_for`)."""
    return run_folder_for(recipe).root


def update_metrics(run_dir: Path, section: str, values: Any) -> dict[str, Any]:
    """Merge one section into the run's metrics.json and return the whole file's content."""
    return RunFolder(run_dir).update_metrics(section, values)


def base_model_path(recipe: Recipe) -> str:
    """The model to fine-tune: the recipe's model, or the one this recipe pretrained.

    A GGUF file or a ``package:`` name resolves to its plain HF folder here, so the adapter, eval,
    serve and export all name that folder as the base.
    """
    if recipe.model.name_or_path:
        from ayar.models.load import resolve_model_name

        return resolve_model_name(recipe.model.name_or_path)
    path = RunFolder(recipe.run_dir).pretrain_model
    if not (path / "config.json").is_file():
        raise UsageError(f"no pretrained base model at {path}: run `ayar pretrain` first or set model.name_or_path")
    return str(path)


def stage_pretrain(recipe: Recipe) -> Path:
    """Pretrain the from-scratch base model; returns its folder."""
    from ayar.eval.carbon import track_emissions
    from ayar.train.pretrain import pretrain

    run = run_folder_for(recipe)
    with track_emissions(run.root, "pretrain", recipe.run.country_iso_code, recipe.run.carbon) as emissions:
        result = pretrain(recipe.pretrain, run.pretrain, recipe.run.seed)
    _record_carbon(run, "pretrain", emissions.as_dict())
    run.update_metrics("pretrain", {"final_loss": result.final_loss, "steps": result.steps,
                                         "windows": result.windows, "corpus_tokens": result.tokens_in_corpus,
                                         "wall_time_s": result.wall_time_s})
    return result.model_dir


def stage_prepare(recipe: Recipe) -> PreparedData:
    """Prepare the recipe's data into run_dir/data."""
    run = run_folder_for(recipe)
    tokenizer = None  # token statistics in the data card need a tokenizer; the base's when it exists
    if recipe.model.name_or_path or (run.pretrain_model / "config.json").is_file():
        from ayar.models.load import resolve_model_name

        tokenizer = resolve_model_name(base_model_path(recipe))
    prepared = prepare(recipe.data, run.data, recipe.run.seed, tokenizer=tokenizer)
    if recipe.data.rehearsal is None:
        (prepared.root / REHEARSAL_FILE).unlink(missing_ok=True)  # a stale set from an earlier recipe
    else:
        from ayar.eval.rehearsal import build_rehearsal  # the base model answers the rehearsal prompts

        build_rehearsal(recipe, base_model_path(recipe), prepared)
    return prepared


def prepared_data(recipe: Recipe) -> PreparedData:
    """The prepared data of this run; a clear error when `ayar prepare` has not run."""
    prepared = RunFolder(recipe.run_dir).prepared
    if not prepared.split_path("train").is_file():
        raise UsageError(f"no prepared data in {prepared.root}: run `ayar prepare` first")
    return prepared


def _record_carbon(run: RunFolder, stage: str, figures: dict[str, Any]) -> None:
    run.update_metrics("carbon", {**run.read_metrics().get("carbon", {}), stage: figures})


def stage_train(recipe: Recipe, resume: bool = False, callbacks: list[TrainerCallback] | None = None
                ) -> dict[str, Any]:
    """Fine-tune the base model; returns the train figures written to metrics.json.

    ``callbacks`` join the Trainer's own (the sweep's pruning callback reads the validation passes).
    """
    from ayar.eval.carbon import track_emissions
    from ayar.eval.report import plot_loss
    from ayar.train.engine import train

    run = run_folder_for(recipe)
    with track_emissions(run.root, "train", recipe.run.country_iso_code, recipe.run.carbon) as emissions:
        result = train(recipe, base_model_path(recipe), prepared_data(recipe), run.root, resume=resume,
                       extra_callbacks=callbacks)
    _record_carbon(run, "train", emissions.as_dict())
    plot_loss(result.loss_history, run.loss_curve)
    summary = result.summary()
    run.update_metrics("train", summary)
    if recipe.train.interpolate.alpha is not None:
        from ayar.eval.interpolate import apply_interpolation

        run.update_metrics("interpolate", apply_interpolation(recipe, run.model, base_model_path(recipe),
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
    run = run_folder_for(recipe)
    if not run.has_model():
        raise UsageError(f"no trained model in {run.model}: run `ayar train` first")
    with track_emissions(run.root, "eval", recipe.run.country_iso_code, recipe.run.carbon) as emissions:
        result = evaluate(recipe, run.model, base_model_path(recipe), prepared_data(recipe), run.root)
    _record_carbon(run, "eval", emissions.as_dict())
    if result.forgetting is not None:
        run.update_metrics("forgetting", result.forgetting)
    metrics = run.update_metrics("eval", result.sections)
    write_report(run.root, metrics, recipe.run.name)
    if set(recipe.train.report_to) - {"tensorboard"}:
        from ayar.train.tracking import log_eval

        log_eval(recipe, run.root, result.sections)
    _stop_at_the_forgetting_gate(result.forgetting, run)
    return result.sections


def _stop_at_the_forgetting_gate(forgetting: dict[str, Any] | None, run: RunFolder) -> None:
    """GateError (exit 4) naming the reasons and the levers when the forgetting gate failed."""
    if forgetting is not None and not forgetting["gate"]["passed"]:
        raise GateError(f"forgetting gate failed: {'; '.join(forgetting['gate']['reasons'])}; the figures are in "
                        f"{run.metrics_file} (key 'forgetting') and the report (eval.forgetting sets the "
                        f"bounds); levers to try: {', '.join(forgetting['gate']['levers'])}")


def stage_human_eval(recipe: Recipe, sheet: Path) -> dict[str, Any]:
    """A filled blind annotation sheet, scored against its key (``<run>/annotation/``): the ``human``
    section of metrics.json and of the report."""
    from ayar.eval.human import import_sheet
    from ayar.eval.report import write_report

    run = RunFolder(recipe.run_dir)
    result = import_sheet(Path(sheet), run.annotation / "annotation_key.json", recipe.eval.confidence)
    write_report(run.root, run.update_metrics("human", result), recipe.run.name)
    return result


def run_all(recipe: Recipe, resume: bool = False) -> dict[str, Any]:
    """Every stage of the recipe in order (ending with its export when ``export.enabled``); returns metrics.json."""
    from ayar.methods import build_method

    build_method(recipe.method.name, recipe.method.params()).preflight(recipe.task)  # fail before any stage
    if recipe.pretrain.enabled and not recipe.model.name_or_path:
        if resume and (RunFolder(recipe.run_dir).pretrain_model / "config.json").is_file():
            say("pretrain: reusing the pretrained base model of this run")
        else:
            stage_pretrain(recipe)
    stage_prepare(recipe)
    stage_train(recipe, resume=resume)
    stage_eval(recipe)
    if recipe.export.enabled:
        say(f"exported ({recipe.export.format}) to {stage_export(recipe)}")
    return RunFolder(recipe.run_dir).read_metrics()


def stage_export(recipe: Recipe) -> Path:
    """The export the recipe's ``export`` section asks for, from the run's trained model."""
    from ayar.export import export_model

    cfg = recipe.export
    out = cfg.out or RunFolder(recipe.run_dir).export / cfg.format
    return export_model(recipe.run_dir, out, cfg.format, merge=cfg.merge, gguf_dtype=cfg.gguf_dtype)
