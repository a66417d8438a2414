"""A tiny transformers Trainer wired the way the engine wires methods (optimizer from Method.param_groups)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from transformers import Trainer, TrainerCallback, TrainingArguments

from ayar.methods.base import Method, method_optimizer
from ayar.methods.structure import ParamGroup


class MethodTrainer(Trainer):
    """What the engine's AyarTrainer does for optimizers: the method's param groups, else the default."""

    def __init__(self, *args: Any, method: Method, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.method = method

    def create_optimizer(self, model: torch.nn.Module | None = None) -> torch.optim.Optimizer:
        if self.optimizer is None:
            self.optimizer = method_optimizer(self.method, self.model, self.args)
        return super().create_optimizer(model)


class FirstChange(TrainerCallback):
    """Records, per group, the first optimizer step after which any of its weights differs from the start."""

    def __init__(self, groups: list[ParamGroup]) -> None:
        self.groups = groups
        self.start = [[p.detach().clone() for p in g.params] for g in groups]
        self.first: dict[str, int] = {}

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        for group, start in zip(self.groups, self.start, strict=True):
            moved = [not torch.equal(s, p.detach()) for s, p in zip(start, group.params, strict=True)]
            if group.name not in self.first and any(moved):
                self.first[group.name] = state.global_step
                # Once a group moves, all of its weights move together (none is left behind frozen).
                assert all(moved), f"{group.name}: only part of the group changed at step {state.global_step}"


def train_tiny(model: torch.nn.Module, method: Method, batch: dict[str, torch.Tensor], out: Path, max_steps: int,
               batch_size: int, callbacks: list[TrainerCallback], weight_decay: float = 0.1, lr: float = 1e-2) -> Trainer:
    """Train on the rows of ``batch`` with constant lr and weight decay (so a frozen weight would show decay)."""
    dataset = Dataset.from_dict({k: v.tolist() for k, v in batch.items()})
    args = TrainingArguments(
        output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=batch_size, learning_rate=lr,
        weight_decay=weight_decay, lr_scheduler_type="constant", warmup_steps=0, logging_steps=1000,
        save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, seed=0, dataloader_num_workers=0,
        max_grad_norm=0.0,
    )
    trainer = MethodTrainer(model=model, args=args, train_dataset=dataset,
                            callbacks=[*method.callbacks(), *callbacks], method=method)
    trainer.train()
    return trainer
