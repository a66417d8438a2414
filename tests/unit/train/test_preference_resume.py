"""A preference run (DPO through TRL) goes through the same run lifecycle as supervised training: a SIGTERM stops
it with a checkpoint and the resumed run ends with the weights and losses of a run that was never stopped; an
out-of-memory error halves its micro-batch and it ends with the same weights."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from resume_helpers import SETTINGS, AtStep, assert_same_weights, recipe_for, send_sigterm, step_losses
from safetensors.torch import load_file

from ayar.data.prepare import prepare
from ayar.train.engine import train
from ayar.train.faults import EXIT_STOPPED, TrainingStopped

# The resume tests' tiny run (3 optimizer steps per epoch), as DPO on preference pairs of the synthetic tasks.
DPO = [*(s for s in SETTINGS if not s.startswith(("method.", "train.epochs"))), "train.epochs=1",
       "method.name=dpo", "method.base=lora", "method.base_params={r: 8, target_modules: all-linear, dropout: 0.0}",
       "data.format=preference"]


@pytest.fixture(scope="module")
def dpo_run(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp_path = tmp_path_factory.mktemp("dpo")
    full_recipe = recipe_for(tmp_path, tiny_model_dir, "full", settings=DPO)
    prepared = prepare(full_recipe.data, tmp_path / "data", full_recipe.run.seed)
    full = train(full_recipe, str(tiny_model_dir), prepared, full_recipe.run_dir)
    assert full.steps == 3
    return {"prepared": prepared, "full": full}


def test_a_stopped_dpo_run_resumes_exactly(tiny_model_dir: Path, tmp_path: Path, dpo_run: dict[str, Any]) -> None:
    prepared, full = dpo_run["prepared"], dpo_run["full"]

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


def test_out_of_memory_halves_a_dpo_runs_micro_batch(tiny_model_dir: Path, tmp_path: Path, dpo_run: dict[str, Any],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def fail_at_full_batch(model: Any, args: Any) -> None:
        if args.per_device_train_batch_size == 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    recipe = recipe_for(tmp_path, tiny_model_dir, "oom", settings=DPO)
    result = train(recipe, str(tiny_model_dir), dpo_run["prepared"], recipe.run_dir,
                   extra_callbacks=[AtStep(2, fail_at_full_batch)])
    out = capsys.readouterr().out
    assert "retrying with 2 x 4 (effective batch 8 -> 8) from checkpoint-1" in out
    counted = [line for line in out.splitlines() if "trainable of" in line]
    assert len(counted) == 2  # once per attempt, by the lifecycle, in the run kind's words
    assert all(line.startswith("method dpo (TRL DPOTrainer, base lora): ") for line in counted)
    assert counted[0] == counted[1]
    assert result.steps == dpo_run["full"].steps
    full = load_file(dpo_run["full"].model_dir / "adapter_model.safetensors")
    halved = load_file(result.model_dir / "adapter_model.safetensors")
    for key in full:  # the same pairs per step, summed in two halves: equal up to float rounding
        torch.testing.assert_close(full[key], halved[key], rtol=0, atol=1e-5)
