"""A run stopped after N steps and resumed ends with the same weights as an uninterrupted run."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from ayar.data.prepare import prepare
from ayar.recipe import load_recipe
from ayar.train.engine import train


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True
        return control


def _recipe(tmp: Path, model_dir: Path, name: str):
    return load_recipe(None, [
        f"model.name_or_path={model_dir}", f"run.output_dir={tmp}", f"run.name={name}",
        "data.synthetic.num_records=64", "train.max_steps=6", "train.save_steps=3", "train.batch_size=4",
        "train.precision=fp32", "train.learning_rate=0.01", "method.name=lora", "method.dropout=0.0",
        "train.eval_steps=100",
    ])


def test_resumed_run_matches_uninterrupted(tiny_model_dir: Path, tmp_path: Path) -> None:
    straight = _recipe(tmp_path, tiny_model_dir, "straight")
    prepared = prepare(straight.data, tmp_path / "data", straight.run.seed)
    full = train(straight, str(tiny_model_dir), prepared, straight.run_dir)

    split = _recipe(tmp_path, tiny_model_dir, "split")
    first = train(split, str(tiny_model_dir), prepared, split.run_dir, extra_callbacks=[StopAt(3)])
    assert first.steps == 3
    assert (split.run_dir / "checkpoints" / "checkpoint-3").is_dir()
    second = train(split, str(tiny_model_dir), prepared, split.run_dir, resume=True)
    assert second.steps == 6

    a = load_file(full.model_dir / "adapter_model.safetensors")
    b = load_file(second.model_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    # the adapter did move away from its initialisation (lora_B starts at zero)
    assert any(k.endswith("lora_B.weight") and a[k].abs().sum() > 0 for k in a)
    losses = [h["loss"] for h in full.loss_history if "loss" in h]
    assert losses and all(torch.isfinite(torch.tensor(losses)))
