"""Consent: false-like values drop a record, a missing value does not; the opt-out file drops ids."""

from __future__ import annotations

from pathlib import Path

import pytest

from ayar.data.consent import ConsentFilter, withheld
from ayar.errors import UsageError
from ayar.recipe import ConsentConfig


@pytest.mark.parametrize("value", [False, 0, "false", "No", "hayır", " 0 "])
def test_withheld_values(value: object) -> None:
    assert withheld(value)


@pytest.mark.parametrize("value", [True, 1, "yes", "evet", None, ""])
def test_given_or_missing_consent(value: object) -> None:
    assert not withheld(value)


def test_opt_out_file_and_custom_fields(tmp_path: Path) -> None:
    opt_out = tmp_path / "optout.txt"
    opt_out.write_text("# silinecekler\nk-7\n\n42\n", encoding="utf-8")
    check = ConsentFilter(ConsentConfig(field="izin", opt_out_file=opt_out, id_field="kimlik"))
    assert check.reason({"kimlik": "k-7", "izin": True}) == "opted_out"
    assert check.reason({"kimlik": 42}) == "opted_out"  # ids compare as text
    assert check.reason({"kimlik": "k-8", "izin": "hayır"}) == "no_consent"
    assert check.reason({"kimlik": "# silinecekler"}) is None
    assert check.reason({"kimlik": "k-8"}) is None


def test_missing_opt_out_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="opt_out_file not found"):
        ConsentFilter(ConsentConfig(opt_out_file=tmp_path / "yok.txt"))
