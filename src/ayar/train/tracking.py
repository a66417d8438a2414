"""Experiment tracking: TensorBoard (the default), MLflow and Weights & Biases (``train.report_to``).

transformers' own ``MLflowCallback`` and ``WandbCallback`` log the Trainer's arguments, the model's config
and every train/eval record the Trainer logs. What they leave to the caller is added here:

- where the runs go: MLflow to a file store in the run folder (``<run>/mlruns``) unless
  ``MLFLOW_TRACKING_URI`` names another; W&B into ``<run>/wandb``, offline unless the user is logged in
  (``WANDB_MODE`` wins when set);
- the resolved recipe as parameters (W&B: config);
- after the eval stage (:func:`log_eval`), the eval metrics and the report, loss curve and metrics.json as
  artifacts, in the same tracked run (its ids are kept in ``<run>/tracking.json``).
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import MLflowCallback, WandbCallback

from ayar.errors import UsageError
from ayar.recipe import Recipe
from ayar.run_folder import RunFolder
from ayar.train.callbacks import tensorboard_callback

RECORD_FILE = "tracking.json"  # which MLflow/W&B run belongs to this run folder
ARTIFACTS = ("report.md", "report.html", "loss_curve.png", "metrics.json", "recipe.yaml")
DEFAULT_PROJECT = "ayar"  # MLflow experiment and W&B project unless MLFLOW_EXPERIMENT_NAME / WANDB_PROJECT


def tracking_callbacks(recipe: Recipe, run_dir: Path) -> list[TrainerCallback]:
    """One callback per ``train.report_to`` entry, each writing into (or recorded in) the run folder."""
    callbacks: list[TrainerCallback] = []
    for name in recipe.train.report_to:
        if name == "tensorboard":
            callbacks.append(tensorboard_callback(run_dir / "tb"))
        elif name == "mlflow":
            _require("mlflow")
            callbacks.append(RunFolderMLflowCallback(recipe, run_dir))
        elif name == "wandb":
            _require("wandb")
            callbacks.append(RunFolderWandbCallback(recipe, run_dir))
    return callbacks


def _require(module: str) -> None:
    import importlib.util

    if importlib.util.find_spec(module) is None:
        package = "mlflow-skinny" if module == "mlflow" else module
        raise UsageError(f"train.report_to names {module}, which is not installed: pip install '{package}' "
                         "(or install ayar with the 'tracking' extra)")


# ---------------------------------------------------------------- what is logged


def recipe_params(recipe: Recipe) -> dict[str, str]:
    """The resolved recipe flattened to ``recipe.<section>.<key>`` parameters (MLflow keeps strings)."""
    return {key: json.dumps(value) if isinstance(value, list | dict) else str(value)
            for key, value in flatten(recipe.model_dump(mode="json"), "recipe").items()}


def flatten(data: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts as one level of ``a.b.c`` keys; lists stay values."""
    if not isinstance(data, dict):
        return {prefix: data}
    out: dict[str, Any] = {}
    for key, value in data.items():
        out.update(flatten(value, f"{prefix}{sep}{key}" if prefix else str(key), sep))
    return out


def eval_metrics(results: dict[str, Any]) -> dict[str, float]:
    """The eval stage's numeric results as ``eval/<path>`` metrics (finite numbers only, names MLflow accepts)."""
    metrics = {}
    for key, value in flatten(results, "eval", sep="/").items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            continue
        metrics[re.sub(r"[^0-9A-Za-z_\-. :/]", "_", key)] = float(value)
    return metrics


def read_record(run_dir: Path) -> dict[str, Any]:
    """``<run>/tracking.json``: the tracked runs of this run folder ({} when none)."""
    path = run_dir / RECORD_FILE
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def _write_record(run_dir: Path, tracker: str, values: dict[str, Any]) -> None:
    record = read_record(run_dir)
    record[tracker] = values
    (run_dir / RECORD_FILE).write_text(json.dumps(record, indent=2), encoding="utf-8")


# ---------------------------------------------------------------- MLflow


def mlflow_tracking_uri(run_dir: Path) -> str:
    """``MLFLOW_TRACKING_URI`` when set, else a file store in the run folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or (Path(run_dir).resolve() / "mlruns").as_uri()


def _use_tracking_uri(mlflow: Any, uri: str) -> None:
    """Point MLflow at ``uri``. MLflow 3 keeps its file store "in maintenance mode" and refuses it unless
    ``MLFLOW_ALLOW_FILE_STORE`` is set; a file store in the run folder needs no server and no database
    (mlflow-skinny has no SQL store), so ayar opts in for ``file:`` URIs (a user's own setting wins)."""
    if uri.startswith("file:"):
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow.set_tracking_uri(uri)


class RunFolderMLflowCallback(MLflowCallback):
    """transformers' MLflow callback, with the run opened here: in the run folder's store, named after the
    recipe's run, with the recipe as parameters. Each training opens a new MLflow run (the Trainer restores
    a resumed run's step only after ``on_train_begin``); tracking.json names the latest."""

    def __init__(self, recipe: Recipe, run_dir: Path) -> None:
        super().__init__()
        self.recipe, self.run_dir = recipe, Path(run_dir)

    def setup(self, args: Any, state: Any, model: Any) -> None:
        if state.is_world_process_zero:
            mlflow = self._ml_flow
            uri = mlflow_tracking_uri(self.run_dir)
            _use_tracking_uri(mlflow, uri)
            if mlflow.active_run() is None:  # an out-of-memory retry keeps the run it already opened
                mlflow.set_experiment(os.environ.get("MLFLOW_EXPERIMENT_NAME", DEFAULT_PROJECT))
                run = mlflow.start_run(run_name=self.recipe.run.name)
                _write_record(self.run_dir, "mlflow", {"tracking_uri": uri, "run_id": run.info.run_id,
                                                       "experiment_id": run.info.experiment_id})
                _log_params(mlflow, recipe_params(self.recipe))
        super().setup(args, state, model)  # logs the arguments and model config into the active run

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        super().on_train_end(args, state, control, **kwargs)
        if self._initialized and state.is_world_process_zero and self._ml_flow.active_run() is not None:
            self._ml_flow.end_run()  # the eval stage reopens it by id (tracking.json)


def _log_params(mlflow: Any, params: dict[str, str]) -> None:
    limit = mlflow.utils.validation.MAX_PARAM_VAL_LENGTH
    items = [(k, v if len(v) <= limit else v[: limit - 3] + "...") for k, v in params.items()]
    batch = mlflow.utils.validation.MAX_PARAMS_TAGS_PER_BATCH
    for start in range(0, len(items), batch):
        mlflow.log_params(dict(items[start:start + batch]))


def _mlflow_log_eval(run_dir: Path, metrics: dict[str, float], step: int) -> None:
    import mlflow

    record = read_record(run_dir).get("mlflow")
    if not record:
        return
    _use_tracking_uri(mlflow, record["tracking_uri"])
    with mlflow.start_run(run_id=record["run_id"]):
        if metrics:
            mlflow.log_metrics(metrics, step=step)
        for name in ARTIFACTS:
            if (run_dir / name).is_file():
                mlflow.log_artifact(str(run_dir / name))
        if (run_dir / "report_files").is_dir():
            mlflow.log_artifacts(str(run_dir / "report_files"), artifact_path="report_files")


# ---------------------------------------------------------------- Weights & Biases


def wandb_mode() -> str:
    """``WANDB_MODE`` when set; else online when W&B has credentials (env, settings or .netrc), else offline."""
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    import wandb

    return "online" if wandb.login(prompt=False, verify=False) else "offline"


class RunFolderWandbCallback(WandbCallback):
    """transformers' W&B callback, with the run opened here: under ``<run>/wandb``, offline unless logged
    in, named after the recipe's run, with the recipe as config."""

    def __init__(self, recipe: Recipe, run_dir: Path) -> None:
        super().__init__()
        self.recipe, self.run_dir = recipe, Path(run_dir)

    def setup(self, args: Any, state: Any, model: Any, **kwargs: Any) -> None:
        if state.is_world_process_zero and self._wandb.run is None:
            run = _wandb_init(self.recipe, self.run_dir, None)
            _write_record(self.run_dir, "wandb", {"id": run.id, "project": run.project, "mode": wandb_mode()})
        super().setup(args, state, model, **kwargs)


def _wandb_init(recipe: Recipe, run_dir: Path, run_id: str | None) -> Any:
    import wandb

    return wandb.init(project=os.environ.get("WANDB_PROJECT", DEFAULT_PROJECT), name=recipe.run.name,
                      dir=str(run_dir), mode=wandb_mode(), id=run_id, resume="allow" if run_id else None,
                      config={"recipe": recipe.model_dump(mode="json")})


def _wandb_log_eval(recipe: Recipe, run_dir: Path, metrics: dict[str, float]) -> None:
    import wandb

    record = read_record(run_dir).get("wandb")
    if not record:
        return
    run = wandb.run if wandb.run is not None and wandb.run.id == record["id"] else None
    if run is None:  # a separate `ayar eval`: continue the training's run (offline: a second folder, same id)
        run = _wandb_init(recipe, run_dir, record["id"])
    run.summary.update(metrics)
    run.log(metrics)
    if RunFolder(run_dir).loss_curve.is_file():
        run.log({"loss_curve": wandb.Image(str(RunFolder(run_dir).loss_curve))})
    for name in ("report.md", "report.html", "metrics.json"):
        if (run_dir / name).is_file():
            run.save(str(run_dir / name), base_path=str(run_dir), policy="now")
    run.finish()


# ---------------------------------------------------------------- after the eval stage


def log_eval(recipe: Recipe, run_dir: Path, results: dict[str, Any]) -> None:
    """Add the eval stage's metrics and the report/loss-curve artifacts to the training's tracked runs."""
    metrics = eval_metrics(results)
    step = _final_step(run_dir)
    if "mlflow" in recipe.train.report_to:
        _mlflow_log_eval(run_dir, metrics, step)
    if "wandb" in recipe.train.report_to:
        _wandb_log_eval(recipe, run_dir, metrics)


def _final_step(run_dir: Path) -> int:
    return int(RunFolder(run_dir).read_metrics().get("train", {}).get("steps") or 0)
