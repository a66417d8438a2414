"""Gradual unfreezing (ULMFiT): head and top block group first, one more group below every K steps/epochs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel, TrainerCallback

from ayar.console import say
from ayar.errors import AyarError, UsageError
from ayar.methods import register
from ayar.methods.base import Method
from ayar.methods.structure import ParamGroup, layer_groups, optimizer_groups, set_trainable

START_GROUPS = 2  # the head and the top block group train from the first step


class GradualUnfreezeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unfreeze_every: int = Field(1, ge=1, description="Unfreeze one more group every this many steps or epochs.")
    unit: Literal["steps", "epochs"] = Field("epochs", description="What unfreeze_every counts.")
    blocks_per_group: int = Field(1, ge=1, description="Transformer blocks per group (per stack for T5).")
    lr_decay: float | None = Field(
        None, gt=0, le=1,
        description="Discriminative learning rates: group i from the top (head = 0) trains at lr * lr_decay**i; "
        "ULMFiT used 1/2.6.",
    )
    embeddings: bool = Field(True, description="Unfreeze the embeddings as the last group (false: never).")


class UnfreezeSchedule(TrainerCallback):
    """Flips ``requires_grad`` on one more group at each stage and logs when it did."""

    def __init__(
        self, groups: list[ParamGroup], model: torch.nn.Module, every: int, unit: str, start: int = START_GROUPS,
        prefix: str = "gradual_unfreeze",
    ) -> None:
        self.groups = groups
        self.model = model
        self.every = every
        self.unit = unit
        self.start = start
        self.prefix = prefix
        self.unfrozen = 0
        self.events: list[dict[str, Any]] = []
        self.log_path: Path | None = None

    def stage(self, state: Any) -> int:
        """How many unfreezing stages have passed at the start of the next optimizer step."""
        done = state.global_step if self.unit == "steps" else math.floor((state.epoch or 0.0) + 1e-6)
        return done // self.every

    def apply(self, step: int, stage: int) -> None:
        """Train the first ``start + stage`` groups; log each group as it is unfrozen."""
        target = min(len(self.groups), self.start + stage)
        if target == self.unfrozen:
            return
        set_trainable(self.model, [p for g in self.groups[:target] for p in g.params])
        for group in self.groups[self.unfrozen:target]:
            event = {"step": step, "group": group.name, "params": group.numel()}
            self.events.append(event)
            say(f"{self.prefix}: step {step}: training {group.name} ({group.numel():,} parameters)")
        self.unfrozen = target
        if self.log_path is not None:
            self.log_path.write_text(json.dumps(self.events, indent=1), encoding="utf-8")

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.check_optimizer(kwargs.get("optimizer"))
        self.apply(state.global_step, self.stage(state))

    def check_optimizer(self, optimizer: Any) -> None:
        """Fail loudly if a group to be unfrozen later is not in the optimizer: it would silently never train."""
        if optimizer is None:
            return
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        missing = [g.name for g in self.groups if any(id(p) not in in_optimizer for p in g.params)]
        if missing:
            raise AyarError(f"{self.prefix}: the optimizer lacks the weights of {', '.join(missing)}; the trainer "
                            "must build it from Method.param_groups (ayar.methods.base.method_optimizer)")

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.apply(state.global_step, self.stage(state))


@register
class GradualUnfreeze(Method):
    name = "gradual_unfreeze"
    summary = "ULMFiT-style: unfreeze from the top down during training; guards pretrained layers on small data."
    params_model = GradualUnfreezeParams

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.groups: list[ParamGroup] = []
        self.schedule: UnfreezeSchedule | None = None

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        groups = layer_groups(model, self.params.blocks_per_group)
        if not self.params.embeddings:
            groups = [g for g in groups if g.name != "embeddings"]
        if len(groups) < START_GROUPS:
            raise UsageError(f"gradual_unfreeze needs a head and at least one block group; found {len(groups)}")
        self.groups = groups
        self.schedule = UnfreezeSchedule(groups, model, self.params.unfreeze_every, self.params.unit)
        set_trainable(model, [])
        self.schedule.apply(0, 0)
        return model

    def setup(self, model: torch.nn.Module, tokenizer: Any, train_dataset: Any, run_dir: Any) -> None:
        if self.schedule is not None and run_dir is not None:
            self.schedule.log_path = Path(run_dir) / "unfreeze_schedule.json"

    def callbacks(self) -> list[TrainerCallback]:
        if self.schedule is None:
            raise RuntimeError("prepare_model must run before callbacks()")
        return [self.schedule]

    def group_lrs(self, base_lr: float) -> list[float]:
        """Learning rate of each group, top first."""
        decay = self.params.lr_decay or 1.0
        return [base_lr * decay**i for i in range(len(self.groups))]

    def param_groups(self, model: torch.nn.Module, base_lr: float, weight_decay: float) -> list[dict] | None:
        pairs = [(g.params, lr) for g, lr in zip(self.groups, self.group_lrs(base_lr), strict=True)]
        return optimizer_groups(model, pairs, weight_decay)
