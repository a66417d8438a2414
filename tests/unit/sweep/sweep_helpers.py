"""A tiny sweep recipe: the conftest's config-built model, a few dozen synthetic records, a few steps."""

from __future__ import annotations

from pathlib import Path


def sweep_sets(model_dir: Path, out: Path, *extra: str) -> list[str]:
    """``--set`` overrides of a sweep that trains 4 steps per trial and validates every 2."""
    return [f"model.name_or_path={model_dir}", f"run.output_dir={out}", "run.name=s", "run.carbon=false",
            "data.synthetic.num_records=48", "data.synthetic.tasks=[upper]", "data.template=chatml",
            "data.split={train: 0.6, validation: 0.2, test: 0.2}", "method.name=lora", "train.max_steps=4",
            "train.batch_size=4", "train.precision=fp32", "train.eval_steps=2", "train.logging_steps=1",
            "train.report_to=[]", "sweep.test_best=false", "sweep.sampler=random",
            "sweep.space={train.learning_rate: {low: 1.0e-4, high: 1.0e-2, log: true}}", *extra]
