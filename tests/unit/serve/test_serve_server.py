"""Server start-up helpers: options, keys, adapters, threads, recipe settings; mistakes are UsageErrors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ayar.errors import UsageError
from ayar.recipe import ServeConfig
from ayar.serve.app import ServeSettings
from ayar.serve.server import api_keys_from, parse_adapters, serve, set_cpu_threads


def test_api_keys_come_from_options_else_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AYAR_API_KEY", "k1, k2")
    assert api_keys_from(None) == ["k1", "k2"]
    assert api_keys_from(["cli"]) == ["cli"]
    monkeypatch.delenv("AYAR_API_KEY")
    assert api_keys_from(None) == []


def test_adapter_specs() -> None:
    assert parse_adapters(["tr=runs/a", " en = runs/b "]) == {"tr": Path("runs/a"), "en": Path("runs/b")}
    for bad in ("tr", "=x", "tr="):
        with pytest.raises(UsageError, match="name=path"):
            parse_adapters([bad])


def test_threads_leave_a_core_by_default() -> None:
    before = torch.get_num_threads()
    try:
        assert set_cpu_threads(1) == 1 and torch.get_num_threads() == 1
        assert set_cpu_threads(None) >= 1
        with pytest.raises(UsageError):
            set_cpu_threads(0)
    finally:
        torch.set_num_threads(before)


def test_settings_from_the_recipe_section(tmp_path: Path) -> None:
    settings = ServeSettings.from_config(ServeConfig(log_text=True, request_timeout=5), ["k"], tmp_path / "r.db")
    assert settings.log_requests and settings.log_text and settings.log_db == tmp_path / "r.db"
    assert settings.request_timeout == 5 and settings.api_keys == ["k"]
    assert ServeSettings().log_requests is False  # logging is off unless asked


def test_serve_rejects_missing_folders_before_binding(tmp_path: Path, chat_model_dir: Path) -> None:
    before = torch.get_num_threads()
    try:
        with pytest.raises(UsageError, match="model folder not found"):
            serve(tmp_path / "none")
        with pytest.raises(UsageError, match="adapter 'tr' folder not found"):
            serve(chat_model_dir, adapters={"tr": tmp_path / "none"})
        with pytest.raises(UsageError, match="--log-db"):
            serve(chat_model_dir, settings=ServeSettings(log_requests=True))
    finally:
        torch.set_num_threads(before)
