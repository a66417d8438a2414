"""Scoring through /v1/completions and /v1/chat/completions: the model's own log-probabilities, in OpenAI's
shapes, for prompts given as text or token ids, and n choices per prompt."""

from __future__ import annotations

import math

import pytest
import torch
from fastapi.testclient import TestClient

CHAT = "/v1/chat/completions"
HELLO = [{"role": "user", "content": "What is a list comprehension?"}]
TEXT = "def main(x):\n    return [y for y in x]"


def _post(client: TestClient, route: str, **body: object) -> dict:
    response = client.post(route, json={"model": "tiny", **body})
    assert response.status_code == 200, response.text
    return response.json()


def _forward_logprobs(engine, ids: list[int]) -> torch.Tensor:
    """log p(ids[t] | ids[:t]) for t >= 1 by a direct forward pass, outside the server."""
    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:]).unsqueeze(1)).squeeze(1)


def test_echo_with_max_tokens_0_scores_the_text_as_a_forward_pass_and_nll_sums_do(make_client) -> None:
    from ayar.eval.perplexity import nll_sums

    client = make_client()
    engine = client.app.state.engine
    body = _post(client, "/v1/completions", prompt=TEXT, max_tokens=0, echo=True, logprobs=3)
    choice = body["choices"][0]
    assert choice["text"] == TEXT and body["usage"]["completion_tokens"] == 0
    scored = choice["logprobs"]
    ids = engine.encode_text(TEXT)
    assert len(scored["tokens"]) == len(ids) and scored["token_logprobs"][0] is None
    assert scored["top_logprobs"][0] is None
    assert scored["tokens"] == [engine.tokenizer.decode([t]) for t in ids]
    assert scored["text_offset"][0] == 0 and scored["text_offset"] == sorted(scored["text_offset"])
    expected = _forward_logprobs(engine, ids)
    assert torch.allclose(torch.tensor(scored["token_logprobs"][1:]), expected, atol=1e-4)
    nll, count = nll_sums(engine.model, [(ids, ids)])[0]
    assert count == len(ids) - 1
    assert -sum(scored["token_logprobs"][1:]) == pytest.approx(nll, rel=1e-5)
    for top, chosen in zip(scored["top_logprobs"][1:], scored["token_logprobs"][1:], strict=True):
        values = list(top.values())
        assert len(values) <= 3 and values == sorted(values, reverse=True) and values[0] >= chosen - 1e-6


def test_token_id_prompts_score_like_lm_eval_multiple_choice(make_client) -> None:
    """What lm-eval's local-completions model sends: token-id prompts, echo, logprobs 1, max_tokens 1."""
    client = make_client()
    engine = client.app.state.engine
    prompts = [engine.encode_text("import os"), engine.encode_text("class Foo(Base): pass")]
    body = _post(client, "/v1/completions", prompt=prompts, echo=True, logprobs=1, max_tokens=1, temperature=0)
    assert [c["index"] for c in body["choices"]] == [0, 1]
    for ids, choice in zip(prompts, body["choices"], strict=True):
        scored = choice["logprobs"]
        assert len(scored["token_logprobs"]) == len(ids) + 1  # the prompt, then the one generated token
        assert choice["text"].startswith(engine.tokenizer.decode(ids))
        expected = _forward_logprobs(engine, ids)
        assert torch.allclose(torch.tensor(scored["token_logprobs"][1:len(ids)]), expected, atol=1e-4)
        greedy = scored["top_logprobs"][-1]  # temperature 0: the generated token is the most likely one
        assert list(greedy) == [scored["tokens"][-1]] and greedy[scored["tokens"][-1]] == scored["token_logprobs"][-1]
    alone = _post(client, "/v1/completions", prompt=prompts[1], echo=True, logprobs=1, max_tokens=1, temperature=0)
    assert alone["choices"][0]["logprobs"] == body["choices"][1]["logprobs"]


def test_a_list_of_text_prompts_answers_one_choice_each_and_echo_without_logprobs(make_client) -> None:
    client = make_client()
    body = _post(client, "/v1/completions", prompt=["def a", "def b"], max_tokens=0, echo=True)
    assert [c["text"] for c in body["choices"]] == ["def a", "def b"]
    assert all(c["logprobs"] is None and c["finish_reason"] == "length" for c in body["choices"])
    plain = _post(client, "/v1/completions", prompt="def a", max_tokens=4, min_tokens=4, temperature=0, logprobs=0)
    scored = plain["choices"][0]["logprobs"]
    assert len(scored["tokens"]) == 4 and all(v is not None and v < 0 for v in scored["token_logprobs"])
    assert scored["top_logprobs"] == [{}] * 4
    assert scored["text_offset"][0] == len("def a")  # offsets count in the prompt and its completion


def test_chat_logprobs_are_the_generated_tokens_own(make_client) -> None:
    client = make_client()
    engine = client.app.state.engine
    body = _post(client, CHAT, messages=HELLO, max_tokens=6, min_tokens=6, temperature=0, logprobs=True,
                 top_logprobs=2)
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"] == 6
    prompt = engine.encode_chat(HELLO)
    with torch.inference_mode():  # the same greedy answer, generated outside the server
        out = engine.model.generate(torch.tensor([prompt]), max_new_tokens=6, min_new_tokens=6, do_sample=False,
                                    eos_token_id=sorted(engine.stop_ids), pad_token_id=engine.tokenizer.pad_token_id)
    generated = out[0, len(prompt):].tolist()
    assert [e["token"] for e in content] == [engine.tokenizer.decode([t]) for t in generated]
    expected = _forward_logprobs(engine, prompt + generated)[-6:]
    assert torch.allclose(torch.tensor([e["logprob"] for e in content]), expected, atol=1e-4)
    joined = b"".join(bytes(e["bytes"]) for e in content)
    assert joined.decode("utf-8", errors="replace") == engine.tokenizer.decode(generated)
    for entry in content:
        tops = entry["top_logprobs"]
        assert len(tops) == 2 and tops[0]["logprob"] >= tops[1]["logprob"]
        assert tops[0]["token"] == entry["token"] and tops[0]["logprob"] == entry["logprob"]  # greedy
        assert sum(math.exp(t["logprob"]) for t in tops) <= 1 + 1e-5
    assert _post(client, CHAT, messages=HELLO, max_tokens=2)["choices"][0]["logprobs"] is None


def test_n_choices_differ_repeat_with_a_seed_and_each_stops_at_its_stop_string(make_client) -> None:
    client = make_client()
    sampled = {"messages": HELLO, "max_tokens": 20, "min_tokens": 20, "temperature": 1.2, "n": 3}
    first = _post(client, CHAT, **sampled, seed=9)
    texts = [c["message"]["content"] for c in first["choices"]]
    assert [c["index"] for c in first["choices"]] == [0, 1, 2] and len(set(texts)) == 3
    assert [c["message"]["content"] for c in _post(client, CHAT, **sampled, seed=9)["choices"]] == texts
    assert first["usage"]["completion_tokens"] == 60
    stop = texts[1][8:11]
    cut = _post(client, CHAT, **sampled, seed=9, stop=["never there", stop])["choices"]
    assert cut[1]["finish_reason"] == "stop" and texts[1].startswith(cut[1]["message"]["content"])
    assert all(stop not in c["message"]["content"] for c in cut)
    unseeded = _post(client, CHAT, **sampled)["choices"]
    assert len({c["message"]["content"] for c in unseeded}) == 3


def test_streaming_what_it_cannot_stream_is_a_400_naming_stream(make_client) -> None:
    client = make_client()
    for body in ({"messages": HELLO, "n": 2}, {"messages": HELLO, "logprobs": True}):
        response = client.post(CHAT, json={"model": "tiny", "stream": True, **body})
        assert response.status_code == 400 and response.json()["error"]["param"] == "stream"
    response = client.post("/v1/completions", json={"model": "tiny", "prompt": "x", "echo": True, "stream": True})
    assert response.status_code == 400


def test_token_ids_outside_the_vocabulary_are_a_400(make_client) -> None:
    client = make_client()
    size = len(client.app.state.engine.tokenizer)
    for ids in ([1, size], [-1], [[3], [2, size + 7]]):
        response = client.post("/v1/completions", json={"model": "tiny", "prompt": ids, "max_tokens": 1})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_token_id", ids


def test_greedy_seeded_jobs_batch_together_and_sampled_or_constrained_ones_run_alone() -> None:
    """lm-eval sends a seed with temperature 0: its requests still share generate calls."""
    from ayar.serve.jobs import Job, SamplingParams
    from ayar.serve.queued_engine import QueuedEngine

    jobs: list[Job] = []  # kept alive: a job running alone is keyed by its id, which a freed job's successor reuses

    def key(**params: object) -> tuple:
        settings = {"max_tokens": 1, "top_p": 1.0, "top_k": 0, **params}
        jobs.append(Job("tiny", [1], SamplingParams(**settings), 0.0, emit=lambda event: None))
        return QueuedEngine._batch_key(jobs[-1])

    assert key(temperature=0.0, seed=1) == key(temperature=0.0, seed=2) == key(temperature=0.0)
    assert key(temperature=1.0, seed=1) != key(temperature=1.0, seed=1)
    assert key(temperature=0.0, constraint=object()) != key(temperature=0.0)
    assert key(temperature=0.0, max_tokens=0) != key(temperature=0.0)
