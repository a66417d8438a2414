"""Transfer learning: a pretrained body with a new task head, the body optionally frozen for a first phase."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel, TrainerCallback

from ayar.errors import UsageError
from ayar.methods import register
from ayar.methods.base import Method
from ayar.methods.gradual_unfreeze import UnfreezeSchedule
from ayar.methods.structure import ParamGroup, head_modules, optimizer_groups, reinit_modules, set_trainable
from ayar.tasks import get_task


class TransferParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    freeze_body_for: int = Field(
        0, ge=0, description="Train only the head for this many steps/epochs first, then everything (0: no phase)."
    )
    unit: Literal["steps", "epochs"] = Field("epochs", description="What freeze_body_for counts.")
    reinit_head: bool | None = Field(
        None,
        description="Draw a fresh head even if the checkpoint has one. Default: yes for classification, no for "
        "generation tasks (their head is the vocabulary projection, often tied to the embeddings).",
    )
    body_lr_scale: float = Field(1.0, gt=0, le=1, description="The body trains at lr * body_lr_scale.")


@register
class Transfer(Method):
    name = "transfer"
    summary = "Pretrained body + new task head (head-only phase first if asked): new labels on a pretrained model."
    params_model = TransferParams

    def __init__(self, params: dict[str, Any] | None = None) -> None:
        super().__init__(params)
        self.groups: list[ParamGroup] = []
        self.schedule: UnfreezeSchedule | None = None

    def prepare_model(self, model: PreTrainedModel, task: str) -> torch.nn.Module:
        heads = head_modules(model)
        new_head = get_task(task).label_map  # a classifier's head is new; an LM head is pretrained
        reinit = self.params.reinit_head if self.params.reinit_head is not None else new_head
        if reinit:
            if not new_head and getattr(model.config, "tie_word_embeddings", False):
                raise UsageError("method.reinit_head would redraw the embeddings tied to this model's LM head; "
                                 "use reinit_head: false")
            reinit_modules(model, [m for _, m in heads])
        head_params = {id(p): p for _, m in heads for p in m.parameters()}
        body = [p for p in model.parameters() if id(p) not in head_params]
        self.groups = [ParamGroup("head " + ",".join(n for n, _ in heads), list(head_params.values())),
                       ParamGroup("body", body)]
        start = 1 if self.params.freeze_body_for else 2
        self.schedule = UnfreezeSchedule(self.groups, model, max(self.params.freeze_body_for, 1), self.params.unit,
                                         start=start, prefix="transfer")
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

    def param_groups(self, model: torch.nn.Module, base_lr: float, weight_decay: float) -> list[dict] | None:
        head, body = self.groups
        return optimizer_groups(model, [(head.params, base_lr), (body.params, base_lr * self.params.body_lr_scale)],
                                weight_decay)
