"""The run folder: one type owns its layout, its metrics file and its format version.

``<run.output_dir>/<run.name>/`` holds::

    run.json            the folder's format version (and the ayar version that made it)
    recipe.yaml         the resolved recipe
    metrics.json        every stage's figures, one section each, with the format version
    pretrain/model/     the from-scratch base model (pretraining on)
    data/               the prepared splits (PreparedData)
    checkpoints/  model/  tb/  train_history.json  loss_curve.png
    predictions.jsonl  samples.jsonl  report.md  report.html  annotation/  export/

Folders made before the format had a version (no ``run.json``) have the same layout and open as
version 1; a folder from a newer format gets a clear error naming what to re-run.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayar.data.prepared import PreparedData
from ayar.errors import UsageError
from ayar.recipe import Recipe, dump_recipe, load_recipe

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RunFolder:
    """The paths of one run and the reading and writing of its metrics."""

    root: Path

    recipe_file = property(lambda self: self.root / "recipe.yaml")
    metrics_file = property(lambda self: self.root / "metrics.json")
    info_file = property(lambda self: self.root / "run.json")
    model = property(lambda self: self.root / "model")
    data = property(lambda self: self.root / "data")
    checkpoints = property(lambda self: self.root / "checkpoints")
    pretrain = property(lambda self: self.root / "pretrain")
    pretrain_model = property(lambda self: self.root / "pretrain" / "model")
    tb = property(lambda self: self.root / "tb")
    train_history = property(lambda self: self.root / "train_history.json")
    loss_curve = property(lambda self: self.root / "loss_curve.png")
    predictions = property(lambda self: self.root / "predictions.jsonl")
    samples = property(lambda self: self.root / "samples.jsonl")
    report_md = property(lambda self: self.root / "report.md")
    report_html = property(lambda self: self.root / "report.html")
    annotation = property(lambda self: self.root / "annotation")
    export = property(lambda self: self.root / "export")

    @property
    def prepared(self) -> PreparedData:
        return PreparedData(self.data)

    def is_run(self) -> bool:
        """A run folder is one with its resolved recipe."""
        return self.recipe_file.is_file()

    def has_model(self) -> bool:
        return self.model.is_dir()

    @classmethod
    def of_model(cls, model_dir: Path) -> RunFolder | None:
        """The run folder around a ``<run>/model`` folder (by its name: the recipe may be gone), else None."""
        return cls(Path(model_dir).parent) if Path(model_dir).name == "model" else None

    @classmethod
    def open(cls, path: Path) -> RunFolder:
        """An existing run folder, its format checked; a UsageError names what is missing or too new."""
        run = cls(Path(path))
        if not run.is_run():
            raise UsageError(f"{path} is not an ayar run folder (no recipe.yaml): give the folder `ayar run` wrote")
        run.check_format()
        return run

    def create(self, recipe: Recipe) -> RunFolder:
        """The folder, made on first use, with the resolved recipe and the format version written into it."""
        self.root.mkdir(parents=True, exist_ok=True)
        dump_recipe(recipe, self.recipe_file)
        if not self.info_file.is_file():
            from ayar import __version__

            self.info_file.write_text(json.dumps({"format_version": FORMAT_VERSION, "ayar": __version__}),
                                      encoding="utf-8")
        return self

    def format_version(self) -> int:
        """The folder's format version; 1 for a folder from before versions were written (same layout)."""
        if not self.info_file.is_file():
            return 1
        return int(json.loads(self.info_file.read_text(encoding="utf-8")).get("format_version", 1))

    def check_format(self) -> None:
        version = self.format_version()
        if version > FORMAT_VERSION:
            raise UsageError(f"run folder {self.root} has format version {version}, newer than this ayar reads "
                             f"({FORMAT_VERSION}): upgrade ayar, or re-run the recipe ({self.recipe_file}) with it")

    def read_recipe(self, overrides: list[str] | None = None) -> Recipe:
        return load_recipe(self.recipe_file, overrides or [])

    def read_metrics(self) -> dict[str, Any]:
        """metrics.json, or {} when no stage has written it yet."""
        if not self.metrics_file.is_file():
            return {}
        return json.loads(self.metrics_file.read_text(encoding="utf-8"))

    def update_metrics(self, section: str, values: Any) -> dict[str, Any]:
        """Merge one section into metrics.json (with the format version) and return the whole file's content."""
        metrics = self.read_metrics()
        metrics[section] = json_safe(values)
        metrics["format_version"] = FORMAT_VERSION
        self.metrics_file.write_text(json.dumps(metrics, indent=2, ensure_ascii=False, allow_nan=False),
                                     encoding="utf-8")
        return metrics


def json_safe(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers and strict parsers reject them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value
