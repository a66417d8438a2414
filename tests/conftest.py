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
