"""Interrupted and resumed runs replay the uninterrupted run exactly: same examples, losses and weights.

LoRA dropout is on, so a random state restored at the wrong moment shows up as a different loss.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from resume_helpers import Crash, StopAt, assert_same_weights, recipe_for, seen, step_losses  # noqa: F401

from ayar.data.prepare import prepare
from ayar.train import checkpoint as ckpt
from ayar.train.engine import train


def _per_epoch_ids(batches: list[tuple[int, int, list[int]]]) -> dict[int, list[int]]:
    epochs: dict[int, list[int]] = {}
    for _, epoch, ids in batches:
        epochs.setdefault(epoch, []).extend(ids)
    return epochs


def test_resume_mid_epoch_at_epoch_boundary_and_mid_accumulation(
        tiny_model_dir: Path, tmp_path: Path, seen: dict[str, list]) -> None:  # noqa: F811
    straight = recipe_for(tmp_path, tiny_model_dir, "straight")
    prepared = prepare(straight.data, tmp_path / "data", straight.run.seed)
    n = len(prepared.read_split("train"))
    steps_per_epoch = math.ceil(math.ceil(n / 4) / 2)
    full = train(straight, str(tiny_model_dir), prepared, straight.run_dir)
    reference = list(seen["batches"])
    assert full.steps == 2 * steps_per_epoch
    for epoch, ids in _per_epoch_ids(reference).items():
        assert sorted(ids) == list(range(n)), f"epoch {epoch} did not see every example exactly once"
    assert _per_epoch_ids(reference)[0] != _per_epoch_ids(reference)[1]  # each epoch is shuffled anew
    full_losses = step_losses(full.loss_history)
    assert sorted(full_losses) == list(range(1, full.steps + 1))

    scenarios = {  # name: (how the first run ends, the checkpoint step the resume starts from)
        "mid-epoch": ("stop", 2, 2),
        "epoch-boundary": ("stop", steps_per_epoch, steps_per_epoch),
        "mid-accumulation": ("crash", steps_per_epoch + 2, steps_per_epoch + 1),
    }
    for name, (how, at, resume_step) in scenarios.items():
        seen["batches"].clear()
        recipe = recipe_for(tmp_path, tiny_model_dir, name)
        if how == "stop":
            first = train(recipe, str(tiny_model_dir), prepared, recipe.run_dir, extra_callbacks=[StopAt(at)])
            assert first.steps == at
            first_losses = step_losses(first.loss_history)
        else:
            seen["crash_at"] = [(at, 1)]  # the second micro-batch of step `at`: half an accumulation cycle done
            with pytest.raises(Crash):
                train(recipe, str(tiny_model_dir), prepared, recipe.run_dir)
            first_losses = {}
            assert [b[0] for b in seen["batches"]][-1] == at  # it did die inside that step
        assert ckpt.find_resumable(recipe.run_dir / "checkpoints").name == f"checkpoint-{resume_step}"
        before = [b for b in seen["batches"] if b[0] <= resume_step]
        seen["batches"].clear()
        second = train(recipe, str(tiny_model_dir), prepared, recipe.run_dir, resume=True)
        combined = before + seen["batches"]
        assert combined == reference, f"{name}: the resumed run saw other examples or another order"
        losses = {**first_losses, **step_losses(second.loss_history)}
        for step in range(resume_step + 1, full.steps + 1):
            assert abs(losses[step] - full_losses[step]) <= 1e-6, f"{name}: step {step} loss differs"
        for step, loss in first_losses.items():
            assert abs(loss - full_losses[step]) <= 1e-6
        assert second.steps == full.steps
        assert_same_weights(full.model_dir, second.model_dir)
