"""The request log: off by default, counts without text unless asked, PII redacted, per-request opt-out."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ayar.serve.app import ServeSettings

CHAT = "/v1/chat/completions"
SECRET = "Mail me at ayse.yilmaz@example.com please"


def _rows(db: Path) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    return conn.execute("SELECT * FROM requests ORDER BY id").fetchall()


def _send(client, content: str = SECRET, **extra: object) -> int:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 3, "min_tokens": 3}
    return client.post(CHAT, json={**body, **extra}).status_code


def test_logging_is_off_by_default(make_client, tmp_path: Path) -> None:
    client = make_client(ServeSettings(log_db=tmp_path / "r.sqlite"))
    assert _send(client) == 200
    assert not (tmp_path / "r.sqlite").exists()


def test_counts_and_timings_without_text_unless_text_logging_is_on(make_client, tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    client = make_client(ServeSettings(log_db=db, log_requests=True))
    assert _send(client) == 200 and _send(client, model="nope") == 404
    client.app.state.request_log.flush()
    ok, missing = _rows(db)
    assert (ok["status"], ok["model"], ok["completion_tokens"], ok["prompt"]) == (200, "tiny", 3, None)
    assert ok["prompt_tokens"] > 0 and ok["latency_s"] > 0 and ok["prompt_chars"] == len(SECRET)
    assert missing["status"] == 404 and missing["model"] is None
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_text_logging_redacts_pii_and_honours_log_false(make_client, tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    client = make_client(ServeSettings(log_db=db, log_requests=True, log_text=True))
    assert _send(client) == 200
    assert _send(client, content="do not keep me", log=False) == 200
    client.app.state.request_log.flush()
    rows = _rows(db)
    assert len(rows) == 1
    assert "ayse.yilmaz@example.com" not in rows[0]["prompt"] and "Mail me at" in rows[0]["prompt"]
    assert rows[0]["pii_found"] == 1


def test_metrics_export_the_latest_drift_verdict(make_client, tmp_path: Path) -> None:
    from ayar.serve.logging_db import connect

    db = tmp_path / "r.sqlite"
    client = make_client(ServeSettings(log_db=db, log_requests=True))
    assert "ayar_drift{" not in client.get("/metrics").text
    conn = connect(db)
    conn.execute("INSERT INTO drift (ts, status, window, psi_length) VALUES (1, 'WARN', 100, 0.2)")
    conn.commit()
    text = client.get("/metrics").text
    assert 'ayar_drift{score="status"} 1.0' in text and 'ayar_drift{score="psi_length"} 0.2' in text
