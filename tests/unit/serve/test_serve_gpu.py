"""On a GPU machine the transformers engine serves from the GPU (the `-m gpu` tier: bench/gpu/check.sh)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.gpu


def test_the_engine_serves_from_the_gpu_and_answers(make_client, chat_model_dir: Path) -> None:
    from ayar.serve.engine import load_engine

    engine = load_engine(chat_model_dir, served_name="tiny")
    assert engine.model.device.type == "cuda"
    client = make_client()
    reply = client.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 4,
                                                      "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status_code == 200 and reply.json()["usage"]["completion_tokens"] >= 1
