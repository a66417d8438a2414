"""Shared pieces of the resume and fault tests: a tiny recipe, a step recorder, a stop switch."""

from __future__ import annotations

import os
import signal
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from ayar.recipe import load_recipe
from ayar.train import engine

# 24 training examples, micro-batch 4, grad_accum 2: 3 optimizer steps per epoch, 2 epochs.
SETTINGS = [
    "data.synthetic.num_records=32", "train.batch_size=4", "train.grad_accum=2", "train.epochs=2",
    "train.save_steps=1", "train.save_total_limit=10", "train.logging_steps=1", "train.precision=fp32",
    "train.learning_rate=0.01", "train.warmup_ratio=0.0", "method.name=lora", "method.dropout=0.1",
    "train.eval_steps=1000", "data.split.train=0.75", "data.split.validation=0.125", "data.split.test=0.125",
]


def recipe_for(tmp: Path, model_dir: Path, name: str, *extra: str, settings: list[str] = SETTINGS) -> Any:
    return load_recipe(None, [f"model.name_or_path={model_dir}", f"run.output_dir={tmp}", f"run.name={name}",
                              *settings, *extra])


class StopAt(TrainerCallback):
    """Asks the trainer to stop after ``step`` (a clean interruption, checkpoint already written)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


class Crash(RuntimeError):
    """A simulated crash in the middle of a gradient-accumulation cycle."""


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, list]:
    """Records (step, epoch, example ids) of every training micro-batch; ``crash_at`` raises mid-step."""
    log: dict[str, list] = defaultdict(list)
    original = engine.AyarTrainer.compute_loss

    def recording(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            step = self.state.global_step + 1
            crash = log.get("crash_at")
            if crash and crash[0] == (step, len([r for r in log["batches"] if r[0] == step])):
                log["crash_at"].clear()
                raise Crash(f"simulated crash in step {step}")
            log["batches"].append((step, int(self.state.epoch or 0), inputs["example_index"].tolist()))
        return original(self, model, inputs, return_outputs, num_items_in_batch)

    monkeypatch.setattr(engine.AyarTrainer, "compute_loss", recording)
    return log


def step_losses(history: list[dict[str, float]]) -> dict[int, float]:
    return {int(h["step"]): h["loss"] for h in history if "loss" in h}


def assert_same_weights(a_dir: Path, b_dir: Path) -> None:
    a = load_file(a_dir / "adapter_model.safetensors")
    b = load_file(b_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    assert any(k.endswith("lora_B.weight") and a[k].abs().sum() > 0 for k in a)  # training did move them


class _Payload:
    """Unpickling this creates ``marker``: the proof that a load ran code (see tests/unit/test_safety.py)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import pathlib

        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def plant(path: Path, marker: Path) -> None:
    torch.save({"state": _Payload(marker)}, path)


class AtStep(TrainerCallback):
    """Runs ``action(model, args)`` when optimizer step ``step`` begins; ``undo`` when it ends."""

    def __init__(self, step: int, action, undo=None) -> None:
        self.step, self.action, self.undo, self.handles = step, action, undo, []

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            self.handles.append(self.action(model, args))

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            for handle in self.handles:
                if handle is not None:
                    handle.remove()


def send_sigterm(model, args):
    """An ``AtStep`` action: SIGTERM to this process (ayar's fault guard finishes the step, then stops)."""
    os.kill(os.getpid(), signal.SIGTERM)
