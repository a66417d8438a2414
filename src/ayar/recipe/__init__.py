"""The recipe: one YAML file, validated by this package's pydantic schema.

Defaults live here and only here (a method's own hyperparameters live in its module in
``ayar.methods``, so that adding a method touches no other file). Precedence is
defaults < YAML < ``--set dotted.key=value``. Unknown keys fail with the closest valid key.

The sections are grouped by the stage that reads them (``model_config``, ``data_config``,
``train_config``, ``eval_config``, ``deploy_config``, ``sweep_config``), ``schema`` joins them into
:class:`Recipe`, and ``loading`` reads YAML and overrides into it. Every public name is importable from
``ayar.recipe`` itself.
"""

from ayar.recipe.data_config import (
    CleanConfig,
    ConsentConfig,
    DataConfig,
    DataFormat,
    DedupConfig,
    FilterConfig,
    InputConfig,
    LongTextConfig,
    PiiConfig,
    PiiType,
    RehearsalConfig,
    SplitConfig,
    SyntheticConfig,
)
from ayar.recipe.deploy_config import (
    ExportConfig,
    ExportFormat,
    GgufDtype,
    IterateConfig,
    MonitorConfig,
    ServeConfig,
)
from ayar.recipe.eval_config import BenchmarksConfig, EvalConfig, ForgettingConfig, JudgeConfig, RiskConfig
from ayar.recipe.loading import (
    apply_overrides,
    dump_recipe,
    load_recipe,
    params_error,
    parse_override,
    validate_recipe,
)
from ayar.recipe.model_config import ModelConfig, PretrainConfig, ScratchModelConfig, TokenizerTrainConfig
from ayar.recipe.schema import Recipe, RunConfig
from ayar.recipe.section import Section
from ayar.recipe.sweep_config import Direction, SearchRange, SweepConfig
from ayar.recipe.train_config import InterpolateConfig, MethodConfig, SelfDistillConfig, TrainConfig

__all__ = [
    "BenchmarksConfig", "CleanConfig", "ConsentConfig", "DataConfig", "DataFormat", "DedupConfig", "Direction",
    "EvalConfig", "ExportConfig", "ExportFormat", "FilterConfig", "ForgettingConfig", "GgufDtype",
    "InputConfig", "InterpolateConfig", "IterateConfig", "JudgeConfig", "LongTextConfig", "MethodConfig",
    "ModelConfig", "MonitorConfig", "PiiConfig", "PiiType", "PretrainConfig", "Recipe", "RehearsalConfig",
    "RiskConfig", "RunConfig", "ScratchModelConfig", "SearchRange", "Section", "SelfDistillConfig",
    "ServeConfig", "SplitConfig", "SweepConfig", "SyntheticConfig", "TokenizerTrainConfig", "TrainConfig",
    "apply_overrides", "dump_recipe", "load_recipe", "params_error", "parse_override", "validate_recipe",
]
