"""Trainer callbacks: loss history for the report, TensorBoard into the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from transformers import TrainerCallback
from transformers.integrations import TensorBoardCallback


class LossHistory(TrainerCallback):
    """Keeps every logged record (step, loss, learning rate, eval loss) in memory for the report."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kwargs: Any) -> None:
        if logs:
            numeric = {k: float(v) for k, v in logs.items() if isinstance(v, int | float)}
            self.records.append({"step": int(state.global_step), **numeric})


def tensorboard_callback(log_dir: Path) -> TensorBoardCallback:
    """TensorBoard events written under the run folder (transformers 5 reads its folder from env otherwise)."""
    from torch.utils.tensorboard import SummaryWriter

    log_dir.mkdir(parents=True, exist_ok=True)
    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))
