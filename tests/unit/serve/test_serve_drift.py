"""Drift on synthetic traffic: prompts from the training distribution read OK, shifted prompts read ALERT."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ayar.data.synthetic import generate_records, write_jsonl
from ayar.errors import UsageError
from ayar.serve.drift import EXIT_CODES, check_drift, format_report, js_divergence, mmd_permutation, psi
from ayar.serve.logging_db import RequestLog, RequestRecord, latest_drift

TASKS = ["add", "reverse", "upper", "date"]


def _user_text(record: dict) -> str:
    return f"{record['instruction']}\n\n### Input:\n{record['input']}" if "instruction" in record else record["text"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared-data folder whose train.jsonl holds 400 synthetic TR/EN instruction records."""
    root = tmp_path_factory.mktemp("prepared")
    write_jsonl(list(generate_records(400, 0, ["tr", "en"], TASKS)), root / "train.jsonl")
    return root


def _log_traffic(db: Path, records: list[dict], log_text: bool = True) -> Path:
    log = RequestLog(db, log_text=log_text)
    for record in records:
        log.log(RequestRecord("/v1/chat/completions", 200, "tiny", 12, 4, 0.05, prompt=_user_text(record)))
    log.close()
    return db


@pytest.fixture(scope="module")
def in_distribution_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("live") / "requests.sqlite"
    return _log_traffic(db, list(generate_records(300, 1, ["tr", "en"], TASKS)))


@pytest.fixture(scope="module")
def shifted_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Live traffic of another kind: English chit-chat sentences instead of instructions."""
    db = tmp_path_factory.mktemp("shifted") / "requests.sqlite"
    return _log_traffic(db, list(generate_records(300, 1, ["en"], ["topic"])))


def test_in_distribution_traffic_reads_ok_with_minilm(reference: Path, in_distribution_db: Path,
                                                      tmp_path: Path) -> None:
    report = check_drift(reference, in_distribution_db, plot=tmp_path / "drift.png", max_embed=100)
    assert report.status == "OK", report.scores
    assert set(report.scores) == {"psi_length", "js_tokens", "embedding_mmd", "embedding_p"}
    assert report.n_live == 300 and report.exit_code == 0 and (tmp_path / "drift.png").stat().st_size > 1000


def test_shifted_traffic_reads_alert_with_minilm(reference: Path, shifted_db: Path) -> None:
    report = check_drift(reference, shifted_db, max_embed=100)
    assert report.status == "ALERT" and report.exit_code == EXIT_CODES["ALERT"]
    assert report.levels == {"psi_length": "ALERT", "js_tokens": "ALERT", "embedding_mmd": "ALERT"}
    assert report.scores["embedding_p"] < 0.01
    assert latest_drift(shifted_db)["status"] == 2.0  # the verdict the server's gauge reports
    assert format_report(report).startswith("drift: ALERT") and "embedding_mmd" in format_report(report)


def test_without_logged_text_only_the_length_psi_runs(reference: Path, tmp_path: Path) -> None:
    db = _log_traffic(tmp_path / "r.sqlite", list(generate_records(100, 1, ["en"], ["topic"])), log_text=False)
    assert sqlite3.connect(db).execute("SELECT COUNT(prompt) FROM requests").fetchone() == (0,)
    report = check_drift(reference, db, embeddings=False)
    assert list(report.scores) == ["psi_length"] and report.status == "ALERT" and "--log-text" in report.notes[0]


def test_window_takes_the_latest_requests(reference: Path, tmp_path: Path) -> None:
    """Old shifted traffic followed by recent normal traffic: a small window sees only the recent part."""
    db = _log_traffic(tmp_path / "r.sqlite", list(generate_records(300, 1, ["en"], ["topic"])))
    _log_traffic(db, list(generate_records(300, 2, ["tr", "en"], TASKS)))
    assert check_drift(reference, db, window=300, embeddings=False).status == "OK"
    assert check_drift(reference, db, window=600, embeddings=False).status == "ALERT"


def test_scores_respond_to_shift() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(50, 10, 2000)
    assert psi(base, rng.normal(50, 10, 2000)) < 0.05 < 0.25 < psi(base, rng.normal(80, 10, 2000))
    assert js_divergence(["a b c"] * 5, ["a b c"] * 3) == pytest.approx(0.0, abs=1e-9)
    assert js_divergence(["a b"], ["c d"]) == pytest.approx(1.0)
    x = rng.normal(0, 1, (60, 8))
    assert mmd_permutation(x, rng.normal(0, 1, (60, 8)))[1] > 0.05
    assert mmd_permutation(x, rng.normal(1, 1, (60, 8)))[1] < 0.01


def test_mistakes_are_usage_errors(reference: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="request log not found"):
        check_drift(reference, tmp_path / "none.sqlite")
    few = _log_traffic(tmp_path / "few.sqlite", list(generate_records(5, 1, ["en"], TASKS)))
    with pytest.raises(UsageError, match="at least 20"):
        check_drift(reference, few)
    with pytest.raises(UsageError, match="no training prompts"):
        check_drift(tmp_path / "nothing", few)


def test_tool_calling_records_give_their_user_text(tmp_path: Path) -> None:
    """Serve logs a chat request's user text (never its tools or tool outputs): the reference side reads the
    same from tool-calling records, OpenAI and sharegpt shapes, with the tools as a list or a JSON string."""
    import json

    from ayar.serve.drift import reference_prompts

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    openai = {"tools": tools, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Ankara'da hava nasıl?"}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Ankara"}'}}]},
        {"role": "tool", "content": {"derece": 12}}, {"role": "assistant", "content": "12 derece."}]}
    sharegpt = {"tools": json.dumps(tools), "conversations": [
        {"from": "human", "value": "Weather in Paris?"},
        {"from": "function_call", "value": '{"name": "get_weather", "arguments": {"city": "Paris"}}'},
        {"from": "observation", "value": '{"temp": 9}'}, {"from": "gpt", "value": "9 degrees."}]}
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in (openai, sharegpt)), encoding="utf-8")
    assert reference_prompts(path) == ["Ankara'da hava nasıl?", "Weather in Paris?"]
