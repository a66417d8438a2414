"""method grpo: registered with its run kind, and built with TRL's own sampler, which keeps each prompt's group
of answers together in a batch (ayar's resumable sampler would scatter them)."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset

from ayar.methods import available_methods, build_method
from ayar.models.load import load_model, load_tokenizer
from ayar.recipe import TrainConfig
from ayar.train.lifecycle import run_kind
from ayar.train.trainer import EpochSeededSampler, TrainerBuild, build_trainer


def test_grpo_is_a_registered_method_with_its_own_run_kind() -> None:
    assert "grpo" in available_methods()
    assert run_kind(build_method("grpo", {}).training_run).__name__ == "GrpoRun"


def test_the_grpo_trainer_keeps_trls_grouping_sampler(tiny_model_dir: Path, tmp_path: Path) -> None:
    method = build_method("grpo", {"num_generations": 4, "rewards": [{"name": "length"}]})
    model = method.prepare_model(load_model(str(tiny_model_dir)), "causal_lm")
    rows = Dataset.from_list([{"prompt": f"question {i}", "task": "add"} for i in range(6)])
    trainer = build_trainer(TrainerBuild(model, TrainConfig(batch_size=8, max_steps=1), tmp_path, rows,
                                         processing_class=load_tokenizer(str(tiny_model_dir)), method=method,
                                         resumable_order=False))
    sampler = trainer._get_train_sampler()
    assert not isinstance(sampler, EpochSeededSampler)
    order = list(sampler)
    groups = [order[i:i + 4] for i in range(0, 8, 4)]
    assert all(len(set(group)) == 1 for group in groups)  # each prompt's 4 answers sit side by side
    assert list(trainer._get_train_sampler()) == order  # the order comes from the seed: a resumed run sees it again
