"""`ayar train --resume` for a preference run (DPO through TRL): a SIGTERM stops it with a checkpoint, and the
resumed run ends with the weights and losses of a run that was never stopped."""

from __future__ import annotations

from pathlib import Path

import pytest
from resume_helpers import SETTINGS, AtStep, assert_same_weights, recipe_for, send_sigterm, step_losses

from ayar.data.prepare import prepare
from ayar.train.engine import train
from ayar.train.faults import EXIT_STOPPED, TrainingStopped

# The resume tests' tiny run (3 optimizer steps per epoch), as DPO on preference pairs of the synthetic tasks.
DPO = [*(s for s in SETTINGS if not s.startswith(("method.", "train.epochs"))), "train.epochs=1",
       "method.name=dpo", "method.base=lora", "method.base_params={r: 8, target_modules: all-linear, dropout: 0.0}",
       "data.format=preference"]


def test_a_stopped_dpo_run_resumes_exactly(tiny_model_dir: Path, tmp_path: Path) -> None:
    full_recipe = recipe_for(tmp_path, tiny_model_dir, "full", settings=DPO)
    prepared = prepare(full_recipe.data, tmp_path / "data", full_recipe.run.seed)
    full = train(full_recipe, str(tiny_model_dir), prepared, full_recipe.run_dir)
    assert full.steps == 3

    recipe = recipe_for(tmp_path, tiny_model_dir, "stopped", "train.save_steps=100", settings=DPO)
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM at step 2.*--resume") as err:
        train(recipe, str(tiny_model_dir), prepared, recipe.run_dir, extra_callbacks=[AtStep(2, send_sigterm)])
    assert err.value.exit_code == EXIT_STOPPED
    assert not (recipe.run_dir / "model").exists()
    assert [p.name for p in (recipe.run_dir / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2"]

    resumed = train(recipe, str(tiny_model_dir), prepared, recipe.run_dir, resume=True)
    losses, reference = step_losses(resumed.loss_history), step_losses(full.loss_history)
    assert sorted(losses) == [3]  # only the step after the checkpoint ran again
    assert abs(losses[3] - reference[3]) <= 1e-5
    assert_same_weights(full.model_dir, resumed.model_dir)
