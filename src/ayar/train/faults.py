"""Faults during training: non-finite losses and gradients, SIGTERM/SIGINT, running out of memory.

transformers only hides a NaN loss from its logs (``logging_nan_inf_filter``) and dies on a signal
without a checkpoint, so ayar checks each micro-batch's loss before backward, each step's gradient
norm before the optimizer step, and turns a signal into "finish this step, checkpoint, exit 75".
"""

from __future__ import annotations

import re
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from transformers import TrainerCallback

from ayar.console import say, warn
from ayar.errors import AyarError

EXIT_STOPPED = 75  # EX_TEMPFAIL: stopped on request with a checkpoint written; `--resume` continues
EXIT_NON_FINITE = 3


class TrainingStopped(AyarError):
    """Training stopped on SIGTERM/SIGINT after writing a checkpoint (exit code 75)."""

    exit_code = EXIT_STOPPED


class NonFiniteError(AyarError):
    """A loss or gradient became NaN or infinite (exit code 3); nothing after it was saved."""

    exit_code = EXIT_NON_FINITE


class OutOfMemory(AyarError):
    """A training step did not fit in memory and could not be made smaller."""


class FaultGuard(TrainerCallback):
    """Watches losses, gradients and signals for one training run.

    ``policy`` is ``stop`` (raise :class:`NonFiniteError`, naming the step) or ``skip`` (drop the
    bad micro-batch, or the whole optimizer step for a bad gradient, and count it).
    """

    def __init__(self, policy: str = "stop") -> None:
        self.policy = policy
        self.skipped_batches = 0
        self.skipped_steps = 0
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    # -- non-finite values

    def check_loss(self, loss: torch.Tensor, step: int, examples: list[int] | None) -> bool:
        """True when the micro-batch loss is finite; False to skip it; raises under the ``stop`` policy."""
        if bool(torch.isfinite(loss.detach()).all()):
            return True
        where = f" (examples {examples[:8]})" if examples else ""
        if self.policy == "stop":
            raise NonFiniteError(f"non-finite loss ({loss.detach().float().mean().item()}) at step {step}{where}; "
                                 "training stopped and no checkpoint was written after it. Lower the learning "
                                 "rate, check the data, or set train.on_nonfinite: skip")
        self.skipped_batches += 1
        warn(f"non-finite loss at step {step}{where}: micro-batch skipped "
              f"({self.skipped_batches} so far)")
        return False

    def check_grad_norm(self, grad_norm: Any, model: torch.nn.Module, step: int) -> None:
        """Before the optimizer step: a non-finite gradient norm stops training or skips the step."""
        if grad_norm is None:
            return
        value = float(grad_norm.item() if hasattr(grad_norm, "item") else grad_norm)
        if value == value and value not in (float("inf"), float("-inf")):
            return
        if self.policy == "stop":
            raise NonFiniteError(f"non-finite gradient norm ({value}) at step {step}; training stopped and no "
                                 "checkpoint was written after it. Lower the learning rate or max_grad_norm, "
                                 "or set train.on_nonfinite: skip")
        for param in model.parameters():
            param.grad = None  # optimizers skip parameters without a gradient: no update, no moment change
        self.skipped_steps += 1
        warn(f"non-finite gradient at step {step}: optimizer step skipped ({self.skipped_steps} so far)")

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        # The Trainer hands callbacks no gradient norm, so this one is computed again from the (clipped)
        # gradients: one read of them per step. A non-finite norm leaves NaN in a clipped gradient.
        grads = [p.grad for p in model.parameters() if p.grad is not None] if model is not None else []
        if grads:
            self.check_grad_norm(torch.nn.utils.get_total_norm(grads), model, state.global_step + 1)

    # -- signals

    @contextmanager
    def signals(self) -> Iterator[None]:
        """While training: the first SIGTERM/SIGINT asks for a graceful stop; a second SIGINT interrupts."""
        if threading.current_thread() is not threading.main_thread():  # handlers only work there
            yield
            return
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._on_signal)
        try:
            yield
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)
            self._previous.clear()

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
        self.signal_name = name
        say(f"\n{name} received: finishing the current step, then writing a checkpoint "
              "(press Ctrl-C again to abort without one)")

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.signal_name is not None:
            control.should_save = True
            control.should_training_stop = True
        return control

    def report(self) -> dict[str, int]:
        return {"skipped_batches": self.skipped_batches, "skipped_steps": self.skipped_steps}


# ---------------------------------------------------------------- memory

_CPU_OOM = re.compile(r"(?:can't allocate memory|not enough memory).*?(\d+) bytes", re.IGNORECASE | re.DOTALL)


def cpu_oom_bytes(exc: BaseException) -> int | None:
    """The allocation size of a CPU out-of-memory RuntimeError (None for any other error)."""
    if not isinstance(exc, RuntimeError) or isinstance(exc, torch.OutOfMemoryError):
        return None
    match = _CPU_OOM.search(str(exc))
    return int(match.group(1)) if match else None


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} TiB"


def cpu_oom_error(exc: BaseException, batch_size: int, grad_accum: int) -> OutOfMemory:
    """One clear message for a CPU allocation failure, with the memory the step asked for."""
    needed = cpu_oom_bytes(exc) or 0
    return OutOfMemory(f"out of memory on the CPU: a training step needed {human_bytes(needed)} ({needed:,} bytes) "
                       f"more at train.batch_size {batch_size}, grad_accum {grad_accum}. Lower train.batch_size "
                       "and raise train.grad_accum (same effective batch), lower data.max_length, or set "
                       "train.gradient_checkpointing: true")


def halved(batch_size: int, grad_accum: int) -> tuple[int, int] | None:
    """Half the micro-batch and twice the accumulation (the same effective batch for an even size); None at 1."""
    if batch_size <= 1:
        return None
    return batch_size // 2, grad_accum * 2
