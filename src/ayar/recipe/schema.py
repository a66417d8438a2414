"""The whole recipe: every section under one model, and the checks that span sections."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from ayar.errors import UsageError
from ayar.recipe.data_config import DataConfig
from ayar.recipe.deploy_config import ExportConfig, IterateConfig, MonitorConfig, ServeConfig
from ayar.recipe.eval_config import EvalConfig
from ayar.recipe.model_config import ModelConfig, PretrainConfig
from ayar.recipe.section import Section
from ayar.recipe.sweep_config import SweepConfig
from ayar.recipe.train_config import MethodConfig, TrainConfig
from ayar.tasks import get_task, task_names


class RunConfig(Section):
    name: str = Field("run", description="Run name; the run folder is <output_dir>/<name>.")
    output_dir: Path = Field(Path("runs"), description="Root folder for run folders.")
    seed: int = Field(42, description="Global seed for Python, NumPy, torch and data order.")
    overwrite: bool = Field(True, description="Reuse an existing run folder of the same name.")
    carbon: bool = Field(True, description="Track energy and CO2 of train and eval (codecarbon, offline).")
    country_iso_code: str = Field("TUR", description="Country for codecarbon's carbon intensity.")


class Recipe(Section):
    """A whole fine-tuning recipe."""

    task: str = Field("causal_lm", description="What the model learns; a task of ayar.tasks.",
                      # the registry at the time the schema is read (a task registered later shows too)
                      json_schema_extra=lambda schema: schema.update(enum=list(task_names())))
    run: RunConfig = Field(default_factory=RunConfig)
    pretrain: PretrainConfig = Field(default_factory=PretrainConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    iterate: IterateConfig = Field(default_factory=IterateConfig)
    sweep: SweepConfig = Field(default_factory=SweepConfig, description="`ayar sweep`: the search space and "
                               "objective of a hyperparameter search (other commands ignore it).")

    @field_validator("task")
    @classmethod
    def _registered_task(cls, task: str) -> str:
        try:
            get_task(task)  # the registry, read now: a task registered after import is accepted
        except UsageError as exc:
            raise ValueError(str(exc)) from None
        return task

    @model_validator(mode="after")
    def _has_a_model(self) -> Recipe:
        if self.model.name_or_path is None and not self.pretrain.enabled:
            raise ValueError("model.name_or_path is empty and pretrain.enabled is false: name a base model")
        return self

    @property
    def run_dir(self) -> Path:
        return self.run.output_dir / self.run.name
