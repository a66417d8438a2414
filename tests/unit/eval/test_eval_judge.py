"""The judge against a local OpenAI-compatible server started by the test."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator

import pytest

from ayar.errors import UsageError
from ayar.eval.judge import JudgeClient, parse_score
from live_server import live_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _app():
    from fastapi import FastAPI, HTTPException

    app = FastAPI()

    @app.post("/v1/chat/completions")
    def complete(body: dict) -> dict:
        text = body["messages"][-1]["content"]
        answer = text.split("Assistant's answer:\n", 1)[1].split("\n\n", 1)[0]
        if answer == "crash":
            raise HTTPException(status_code=500, detail="boom")
        reply = "I am not sure." if answer == "vague" else f"Score: {7 if answer == 'good' else 2}"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": reply}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    return app


@pytest.fixture(scope="module")
def judge_url() -> Iterator[str]:
    with live_server(_app(), start_timeout=20, log_level="error", stop_timeout=5) as url:
        yield f"{url}/v1"


def test_judge_scores_and_counts_failures(judge_url: str) -> None:
    client = JudgeClient(judge_url, "test-judge", timeout_s=10)
    result = client.score_all(["q"] * 4, ["r"] * 4, ["good", "bad", "vague", "crash"])
    assert result["scores"] == [7.0, 2.0, None, None]
    assert (result["scored"], result["unparsable"], result["failed"]) == (2, 1, 1)
    assert result["mean_score"] == pytest.approx(4.5)
    assert result["errors"] and "500" in result["errors"][0]


def test_judge_unreachable_is_counted_not_fatal() -> None:
    client = JudgeClient(f"http://127.0.0.1:{_free_port()}/v1", "nobody", timeout_s=2)
    result = client.score_all(["q"], ["r"], ["good"])
    assert result["failed"] == 1 and math.isnan(result["mean_score"])


def test_judge_missing_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AYAR_TEST_JUDGE_KEY", raising=False)
    with pytest.raises(UsageError, match="AYAR_TEST_JUDGE_KEY"):
        JudgeClient("http://127.0.0.1:1/v1", "m", api_key_env="AYAR_TEST_JUDGE_KEY").score_all(["q"], ["r"], ["a"])


@pytest.mark.parametrize(("text", "score"), [("Score: 8", 8.0), ("score=10/10", 10.0), ("7", 7.0),
                                             ("Puan yok", None), ("Score: 42", None), (None, None)])
def test_parse_score(text: str | None, score: float | None) -> None:
    assert parse_score(text) == score
