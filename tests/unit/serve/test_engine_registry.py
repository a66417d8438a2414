"""The serve engines by name: the registry is the one place that lists them, an unknown name is a usage
error naming the choices, and an engine's module is imported only when it is chosen."""

from __future__ import annotations

import subprocess
import sys
import typing
from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.recipe import ServeConfig
from ayar.serve import llamacpp_engine, server, transformers_engine
from ayar.serve.engine import ENGINES, EngineRequest, PreparedEngine, prepare_engine


def test_the_registry_offers_what_the_recipe_accepts() -> None:
    assert list(ENGINES) == list(typing.get_args(ServeConfig.model_fields["engine"].annotation))
    assert ServeConfig().engine in ENGINES


def test_an_unknown_engine_is_a_usage_error_naming_the_choices(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"unknown serve engine 'llama\.cpp'; choose one of transformers, llamacpp, "
                                         r"vllm$"):
        prepare_engine("llama.cpp", EngineRequest(tmp_path))
    with pytest.raises(UsageError, match="unknown serve engine 'tgi'"):
        server.engine_loader("tgi", tmp_path, None, None, 8, 8, None)


def test_the_transformers_engine_loads_with_the_requests_settings(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    monkeypatch.setattr(transformers_engine, "load_engine", lambda *args: calls.append(args) or "engine")
    prepared = server.engine_loader("transformers", tmp_path, {"tr": tmp_path / "tr"}, "tiny", 5, 3, 2)
    assert calls == [] and prepared.has_training_folder  # nothing loads until the server asks
    assert prepared.load() == "engine"
    assert calls == [(tmp_path, {"tr": tmp_path / "tr"}, "tiny", 5, 3)]


def test_a_bare_gguf_has_no_training_folder_to_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llamacpp_engine, "require_llama_cpp", lambda: None)
    gguf = tmp_path / "tiny.gguf"
    gguf.write_bytes(b"GGUF")
    assert not prepare_engine("llamacpp", EngineRequest(gguf)).has_training_folder
    run = tmp_path / "run"  # a run with its GGUF export beside the model folder training wrote
    (run / "model").mkdir(parents=True)
    (run / "model" / "config.json").write_text("{}")
    (run / "export" / "gguf").mkdir(parents=True)
    (run / "export" / "gguf" / "run.gguf").write_bytes(b"GGUF")
    assert prepare_engine("llamacpp", EngineRequest(run)).has_training_folder


def test_serve_runs_the_engine_the_registry_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A new engine is one registry entry: serve checks it, skips the contract where it says so, loads it."""
    seen: dict[str, object] = {}

    def prepare_toy(request: EngineRequest) -> PreparedEngine:
        seen["request"] = request
        return PreparedEngine(lambda: "toy engine", has_training_folder=False)

    class Server:
        def __init__(self, config: object, app: object, drain_timeout: float) -> None:
            seen["app"] = app

        def run(self) -> None:
            seen["ran"] = True

    monkeypatch.setattr(sys.modules[__name__], "prepare_toy", prepare_toy, raising=False)
    monkeypatch.setitem(ENGINES, "toy", f"{__name__}:prepare_toy")
    monkeypatch.setattr(server, "check_serve_contract", lambda *args: seen.setdefault("contract", args))
    monkeypatch.setattr(server, "create_app", lambda settings, loader: loader)
    monkeypatch.setattr(server, "DrainingServer", Server)
    server.serve(tmp_path, max_queue=7, max_batch=2, threads=1, engine="toy")
    assert seen["request"] == EngineRequest(tmp_path, {}, None, 7, 2, 1)
    assert "contract" not in seen and seen["ran"] and seen["app"]() == "toy engine"


def test_an_engines_module_is_imported_only_when_chosen() -> None:
    code = ("import sys, ayar.serve.server; "
            "print(sorted(m for m in ('ayar.serve.llamacpp_engine', 'ayar.serve.vllm_engine') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "[]"
