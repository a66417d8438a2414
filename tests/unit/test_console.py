"""Library messages appear once: the main process says them, other ranks stay quiet."""

from __future__ import annotations

import pytest

from ayar.console import say, warn


def test_the_main_process_speaks(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    say("packing: on")
    warn("checkpoint skipped")
    assert capsys.readouterr().out == "packing: on\nwarning: checkpoint skipped\n"


def test_other_ranks_stay_quiet(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    say("packing: on")
    warn("checkpoint skipped")
    assert capsys.readouterr().out == ""
