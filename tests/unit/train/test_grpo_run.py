"""GRPO through TRL's GRPOTrainer in ayar's run lifecycle: the policy's reward rises within a few steps, the
frozen base stays as it was under LoRA, and a run stopped by SIGTERM resumes from its checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from resume_helpers import SETTINGS, AtStep, assert_same_weights, recipe_for, send_sigterm
from safetensors.torch import load_file
from transformers import TrainerCallback

from ayar.data.prepare import prepare
from ayar.train.engine import train
from ayar.train.faults import EXIT_STOPPED, TrainingStopped

# A user reward the tiny random model can learn in a few steps: the share of letter e in its answer.
REWARD_MODULE = '''
def share_of_e(prompts, completions, **fields):
    assert "task" in fields and "trainer_state" not in fields  # record fields only
    return [c.count("e") / max(len(c), 1) for c in completions]
'''
LORA = "method.base_params={r: 8, target_modules: all-linear, dropout: 0.0}"
GRPO = [*(s for s in SETTINGS if not s.startswith(("method.", "train.epochs", "train.batch_size", "train.grad_accum",
                                                    "train.learning_rate"))),
        "train.batch_size=16", "train.grad_accum=1", "method.name=grpo", LORA, "method.num_generations=4",
        "method.max_completion_length=8", "method.rewards=[{function: 'grpo_test_rewards:share_of_e'}]"]


@pytest.fixture
def user_rewards(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "grpo_test_rewards.py").write_text(REWARD_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))


def run(tmp_path: Path, model_dir: Path, name: str, *extra: str, callbacks: list[TrainerCallback] = (),
        resume: bool = False) -> Any:
    recipe = recipe_for(tmp_path, model_dir, name, *extra, settings=GRPO)
    prepared = prepare(recipe.data, tmp_path / f"data-{name}", recipe.run.seed)
    return recipe, train(recipe, str(model_dir), prepared, recipe.run_dir, resume=resume,
                         extra_callbacks=list(callbacks))


def rewards(result: Any) -> list[float]:
    return [h["reward"] for h in result.loss_history if "reward" in h]


class BaseWeights(TrainerCallback):
    """The non-adapter weights of the trained model at the end of training."""

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.weights = {k.replace("base_model.model.", "").replace(".base_layer", ""): v.detach().clone()
                        for k, v in model.state_dict().items() if "lora_" not in k}


def test_the_policys_mean_reward_rises(tiny_model_dir: Path, tmp_path: Path, user_rewards: None) -> None:
    _, result = run(tmp_path, tiny_model_dir, "rise", "train.max_steps=8", "train.learning_rate=0.05",
                    "train.scheduler=constant", "method.base=full", "method.base_params={}")
    curve = rewards(result)
    assert len(curve) == 8 and all(h["reward_std"] >= 0 for h in result.loss_history if "reward_std" in h)
    early, late = sum(curve[:2]) / 2, sum(curve[-2:]) / 2
    assert late > 2 * early, curve


def test_lora_leaves_the_base_weights_as_they_were(tiny_model_dir: Path, tmp_path: Path, user_rewards: None) -> None:
    base = BaseWeights()
    _, result = run(tmp_path, tiny_model_dir, "lora", "train.max_steps=2", "train.learning_rate=0.05",
                    callbacks=[base])
    original = load_file(tiny_model_dir / "model.safetensors")
    assert original.keys() <= base.weights.keys()
    for key, value in original.items():
        torch.testing.assert_close(base.weights[key], value, rtol=0, atol=0)
    adapter = load_file(result.model_dir / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())  # the adapter moved
    assert all("lora_" in k for k in adapter)


def test_a_stopped_grpo_run_resumes_from_its_checkpoint(tiny_model_dir: Path, tmp_path: Path,
                                                        user_rewards: None) -> None:
    _, full = run(tmp_path, tiny_model_dir, "full", "train.max_steps=3")
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM at step 2.*--resume") as err:
        run(tmp_path, tiny_model_dir, "stopped", "train.max_steps=3", "train.save_steps=100",
            callbacks=[AtStep(2, send_sigterm)])
    assert err.value.exit_code == EXIT_STOPPED
    recipe, resumed = run(tmp_path, tiny_model_dir, "stopped", "train.max_steps=3", "train.save_steps=100",
                          resume=True)
    assert [p.name for p in (recipe.run_dir / "checkpoints").glob("checkpoint-*")] == ["checkpoint-2", "checkpoint-3"]
    assert [int(h["step"]) for h in resumed.loss_history if "reward" in h] == [3]  # only the step after it ran
    assert rewards(resumed) == pytest.approx(rewards(full)[2:], abs=1e-6)  # the same prompts and samples
    assert_same_weights(full.model_dir, resumed.model_dir)
