"""Messages from library code to the user: shown once, by the main process (nanochat's ``print0``).

Under ``--nproc`` every rank runs the same code; without this each message would appear once per
process. The messages go through the ``ayar`` logger (so an application can silence, redirect or
format them with :mod:`logging`); by default they are printed as plain lines on standard output.
"""

from __future__ import annotations

import logging
import os
import sys

logger = logging.getLogger("ayar")


class _CurrentStdout(logging.StreamHandler):
    """A handler writing to whatever ``sys.stdout`` is at the time (redirections and test captures see it)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stdout

    @stream.setter
    def stream(self, value) -> None:
        pass  # always the current sys.stdout


if not logger.handlers:  # an application that configured the "ayar" logger keeps its own handlers
    logger.addHandler(_CurrentStdout())
    logger.setLevel(logging.INFO)
    logger.propagate = False


def is_main_process() -> bool:
    """True on the process that speaks: rank 0 under torchrun/accelerate (they set RANK), or a lone process."""
    return int(os.environ.get("RANK", "0")) == 0


def say(message: str) -> None:
    """A progress line for the user, from the main process only."""
    if is_main_process():
        logger.info(message)


def warn(message: str) -> None:
    """A warning for the user (``warning: ...``), from the main process only."""
    if is_main_process():
        logger.warning(f"warning: {message}")
