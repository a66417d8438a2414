"""Errors that the CLI turns into one clear line and an exit code, never a traceback."""

from __future__ import annotations


class AyarError(Exception):
    """A runtime failure the user can act on (exit code 1)."""

    exit_code = 1


class UsageError(AyarError):
    """A user mistake: bad recipe key, missing file, impossible value (exit code 2)."""

    exit_code = 2


class GateError(AyarError):
    """The run finished and wrote its figures, but one of its own quality gates failed (exit code 4).

    3 is taken by a NaN/inf loss during training; 4 matches `ayar monitor drift`'s ALERT: look at the figures.
    """

    exit_code = 4
