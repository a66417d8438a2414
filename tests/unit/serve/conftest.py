"""Fixtures for the serving tests: a tiny chat model (alpaca template, 512 positions) and a LoRA adapter."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient


def build_chat_model(tiny_dir: Path, out: Path) -> Path:
    """The tiny tokenizer with a chat template and a 2-layer Llama with room for long generations."""
    from ayar.data.templates import set_template
    from ayar.models.load import load_tokenizer
    from ayar.models.scratch import build_model
    from ayar.recipe import ScratchModelConfig

    tokenizer = load_tokenizer(str(tiny_dir))
    set_template(tokenizer, "alpaca")
    model = build_model(ScratchModelConfig(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                                           context_length=512), tokenizer, seed=0)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def build_adapter(base_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with non-zero B matrices (outputs differ from the base's), saved with its tokenizer as
    training saves it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(base_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"],
                                            init_lora_weights=False))
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def chat_model_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_chat_model(tiny_model_dir, tmp_path_factory.mktemp("chat_model"))


@pytest.fixture(scope="session")
def adapter_dirs(chat_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapters")
    return {name: build_adapter(chat_model_dir, root / name, seed) for seed, name in enumerate(("tr", "en"))}


@pytest.fixture
def make_client(chat_model_dir: Path) -> Iterator[Callable[..., TestClient]]:
    """A factory of TestClients over a fresh engine; every client is closed (lifespan ends) after the test."""
    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.engine import load_engine

    clients: list[TestClient] = []

    def make(settings: ServeSettings | None = None, adapters: dict[str, Path] | None = None,
             max_queue: int = 64, served_name: str = "tiny") -> TestClient:
        engine = load_engine(chat_model_dir, adapters, served_name, max_queue).start()
        client = TestClient(create_app(settings or ServeSettings(), engine=engine), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)
