"""A real chat model's conventions: sampling defaults from generation_config.json, answers end at <|im_end|>."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from ayar.serve.engine import SAMPLING_DEFAULTS, sampling_defaults

MERHABA = [{"role": "user", "content": "merhaba"}]


@pytest.fixture
def client(chatml_model_dir: Path) -> Iterator[TestClient]:
    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.engine import load_engine

    engine = load_engine(chatml_model_dir, served_name="chatml").start()
    with TestClient(create_app(ServeSettings(), engine=engine), raise_server_exceptions=False) as test_client:
        yield test_client


def _greedy_answer(model_dir: Path) -> str:
    """The model's own greedy answer, cut where its turn ends (two tokens, then <|im_end|>)."""
    from ayar.data.templates import render_prompt
    from ayar.models.load import load_for_inference

    model, tokenizer = load_for_inference(model_dir)
    ids = tokenizer(render_prompt(tokenizer, MERHABA), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        new = model.generate(torch.tensor([ids]), max_new_tokens=2, do_sample=False, eos_token_id=None)
    return tokenizer.decode(new[0, len(ids):])


def test_generation_config_gives_the_defaults_and_openai_fills_the_rest(chatml_model_dir: Path,
                                                                         tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    tuned = AutoModelForCausalLM.from_pretrained(chatml_model_dir)
    assert sampling_defaults(tuned) == {"temperature": 0.7, "top_p": 0.9, "top_k": 1, "repetition_penalty": 1.0}
    assert sampling_defaults(AutoModelForCausalLM.from_pretrained(tiny_model_dir)) == SAMPLING_DEFAULTS


def test_a_request_without_sampling_settings_takes_the_models_and_ends_at_im_end(
        client: TestClient, chatml_model_dir: Path) -> None:
    # the model's top_k 1 makes its sampling greedy; OpenAI's defaults (top_k off, temperature 1) would
    # sample this near-uniform tiny model at random
    answers = [client.post("/v1/chat/completions", json={"model": "chatml", "messages": MERHABA,
                                                         "max_tokens": 12}).json() for _ in range(3)]
    expected = _greedy_answer(chatml_model_dir)
    for answer in answers:
        choice = answer["choices"][0]
        assert choice["message"]["content"] == expected
        assert choice["finish_reason"] == "stop"  # at <|im_end|>, well before max_tokens
        assert answer["usage"]["completion_tokens"] == 3  # two tokens and the turn's end
