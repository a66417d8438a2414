"""build_trainer: one assembly for every run; a method's own Trainer class still gets ayar's behaviour."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import pytest
import torch
from datasets import Dataset
from test_loss import tokenizer
from test_packing import examples, tiny_model
from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

from ayar.data.tokenize import IGNORE_INDEX
from ayar.methods.base import Method, TrainerSpec
from ayar.recipe import TrainConfig
from ayar.train import checkpoint as ckpt
from ayar.train.faults import NonFiniteError
from ayar.train.trainer import AyarTrainerMixin, TrainerBuild, build_trainer, trainer_class_for


class CountingTrainer(Trainer):
    """A Trainer subclass with its own loss and constructor argument, as TRL's trainers have."""

    def __init__(self, *args: Any, marker: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.marker, self.own_loss_calls = marker, 0

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self.own_loss_calls += 1
        return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)


class CountingArgs(TrainingArguments):
    """A config class with a field of its own, as TRL's ``DPOConfig`` has ``beta``."""

    def __init__(self, *args: Any, beta: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.beta = beta


class OwnTrainerMethod(Method):
    name = "own-trainer-test"

    def trainer_spec(self) -> TrainerSpec:
        return TrainerSpec(CountingTrainer, CountingArgs, args={"beta": 0.25}, kwargs={"marker": "mine"})


def _build(tmp_path: Path, **cfg: Any) -> Any:
    tok = tokenizer()
    model = tiny_model("llama", "sdpa").train()
    settings = {"max_steps": 2, "save_steps": 2, **cfg}
    train_cfg = TrainConfig(batch_size=2, learning_rate=1e-2, warmup_ratio=0.0, logging_steps=1, precision="fp32",
                            packing=False, **settings)
    return build_trainer(TrainerBuild(model, train_cfg, tmp_path / "checkpoints", Dataset.from_list(examples() * 2),
                                      processing_class=tok, method=OwnTrainerMethod(), chunked_loss=True,
                                      data_collator=DataCollatorForSeq2Seq(tok, label_pad_token_id=IGNORE_INDEX)))


def test_a_methods_trainer_class_trains_with_ayar_checkpoints_and_its_own_loss(tmp_path: Path) -> None:
    trainer = _build(tmp_path)
    assert isinstance(trainer, CountingTrainer) and isinstance(trainer, AyarTrainerMixin)
    assert trainer.marker == "mine" and trainer.args.beta == 0.25  # the spec's constructor and config fields
    before = {k: v.detach().clone() for k, v in trainer.model.named_parameters()}
    trainer.train()
    assert trainer.own_loss_calls == 2  # its loss ran (the chunked loss gives way to a foreign trainer's)
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.named_parameters())
    folder = tmp_path / "checkpoints" / "checkpoint-2"
    assert ckpt.verify(folder) is None  # ayar's atomic checkpoint, manifest and all
    assert (folder / "optimizer.json").is_file() and not list(folder.glob("*.pt")) and not list(folder.glob("*.pth"))


def test_a_methods_trainer_class_gets_the_fault_guard(tmp_path: Path) -> None:
    trainer = _build(tmp_path)
    param = next(p for p in trainer.model.parameters() if p.requires_grad)
    param.register_hook(lambda grad: grad * float("inf"))
    with pytest.raises(NonFiniteError, match="non-finite gradient.* at step 1"):
        trainer.train()


def test_resume_restores_a_methods_trainer_exactly(tmp_path: Path) -> None:
    """Two steps, checkpoint, two more from it, equal the four steps in one go (same weights)."""
    whole = _build(tmp_path / "whole", max_steps=4, save_steps=4)
    whole.train()
    first = _build(tmp_path / "resumed", max_steps=4, save_steps=2)
    first.train()  # writes checkpoint-2 and checkpoint-4
    second = _build(tmp_path / "resumed", max_steps=4, save_steps=2)
    second.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoints" / "checkpoint-2"))
    for (name, a), (_, b) in zip(whole.model.named_parameters(), second.model.named_parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_trainer_class_for_puts_ayar_in_front_once() -> None:
    cls = trainer_class_for(CountingTrainer)
    assert cls.__mro__[1:3] == (AyarTrainerMixin, CountingTrainer)
    assert trainer_class_for(CountingTrainer) is cls and trainer_class_for(cls) is cls


def test_at_most_two_private_trainer_overrides_each_explained() -> None:
    """The seam with transformers' private internals stays small: two overrides, each saying why."""
    private = {name for name, member in vars(AyarTrainerMixin).items()
               if name.startswith("_") and not name.startswith("__") and hasattr(Trainer, name)}
    assert private == {"_save_checkpoint", "_get_train_sampler"}
    for name in private:
        assert "Private, because" in inspect.getsource(getattr(AyarTrainerMixin, name))


@pytest.mark.parametrize(("eval_steps", "validated"), [(5, True), (0, False)])
def test_eval_steps_zero_skips_the_validation_pass_at_the_end(tmp_path: Path, eval_steps: int,
                                                              validated: bool) -> None:
    tok = tokenizer()
    train_cfg = TrainConfig(batch_size=2, learning_rate=1e-2, warmup_ratio=0.0, logging_steps=1, precision="fp32",
                            packing=False, max_steps=2, eval_steps=eval_steps)
    trainer = build_trainer(TrainerBuild(
        tiny_model("llama", "sdpa").train(), train_cfg, tmp_path / "checkpoints", Dataset.from_list(examples() * 2),
        eval_dataset=Dataset.from_list(examples()), processing_class=tok, chunked_loss=True,
        data_collator=DataCollatorForSeq2Seq(tok, label_pad_token_id=IGNORE_INDEX)))
    trainer.train()
    # a step-based strategy validates once at the end even when no multiple of eval_steps is reached
    assert any("eval_loss" in entry for entry in trainer.state.log_history) is validated


def test_best_model_selection_needs_validation_passes(tmp_path: Path) -> None:
    from ayar.errors import UsageError
    from ayar.train.trainer import training_arguments

    cfg = TrainConfig(max_steps=2, eval_steps=0, load_best_model_at_end=True)
    with pytest.raises(UsageError, match="eval_steps"):
        training_arguments(cfg, tmp_path, seed=0, has_eval=True)


def test_a_renamed_argument_goes_under_the_name_the_installed_transformers_has(tmp_path: Path) -> None:
    import dataclasses

    from ayar.train.trainer import in_this_version, training_arguments

    @dataclasses.dataclass
    class OlderArguments:  # transformers before the rename knows only gradient_checkpointing
        output_dir: str = ""
        gradient_checkpointing: bool = False

    values = {"output_dir": "x", "activation_checkpointing": True}
    assert in_this_version(OlderArguments, values) == {"output_dir": "x", "gradient_checkpointing": True}
    args = training_arguments(TrainConfig(max_steps=1, gradient_checkpointing=True), tmp_path, seed=0, has_eval=False)
    assert args.activation_checkpointing is True  # the installed release keeps the new name
