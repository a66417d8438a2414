"""The request log: one SQLite row per request (WAL mode), written off the event loop by one thread.

Off by default: what users send is theirs. Counts and timings are logged when logging is on; the
prompt's text only when text logging is on too, and then PII-redacted with the data pipeline's detectors.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    route TEXT NOT NULL,
    model TEXT,
    status INTEGER NOT NULL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    latency_s REAL,
    prompt_chars INTEGER,
    prompt TEXT,
    pii_found INTEGER
);
CREATE TABLE IF NOT EXISTS drift (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    status TEXT NOT NULL,
    window INTEGER,
    psi_length REAL,
    js_tokens REAL,
    embedding_mmd REAL,
    embedding_p REAL
);
"""
DRIFT_LEVELS = {"OK": 0, "WARN": 1, "ALERT": 2}


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create) a request-log database in WAL mode, so readers never block the server's writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    return conn


@dataclass
class RequestRecord:
    """What is known about one finished request."""

    route: str
    status: int
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_s: float | None = None
    prompt: str | None = None  # the user's text; dropped unless text logging is on


class RequestLog:
    """Writes RequestRecords to SQLite from a background thread."""

    def __init__(self, path: Path, log_text: bool = False, pii_types: list[str] | None = None) -> None:
        from ayar.data.pii import redact_pii  # the data pipeline's detectors, so logs and training agree

        self.path, self.log_text, self.pii_types = Path(path), log_text, pii_types
        self._redact = redact_pii
        self._queue: queue.Queue[RequestRecord | None] = queue.Queue()
        self._conn = connect(self.path)
        self._thread = threading.Thread(target=self._write_loop, name="ayar-request-log", daemon=True)
        self._thread.start()

    def log(self, record: RequestRecord) -> None:
        """Queue one record (never blocks the caller)."""
        self._queue.put(record)

    def flush(self) -> None:
        """Wait until every queued record is written."""
        self._queue.join()

    def close(self) -> None:
        """Write what is queued and close the database."""
        self._queue.put(None)
        self._thread.join(10)
        self._conn.close()

    def _row(self, r: RequestRecord) -> tuple[Any, ...]:
        text, found = None, None
        if r.prompt is not None and self.log_text:
            text, counts = self._redact(r.prompt, self.pii_types)
            found = sum(counts.values())
        chars = len(r.prompt) if r.prompt is not None else None
        return (time.time(), r.route, r.model, r.status, r.prompt_tokens, r.completion_tokens, r.latency_s,
                chars, text, found)

    def _write_loop(self) -> None:
        while True:
            record = self._queue.get()
            try:
                if record is None:
                    return
                self._conn.execute(
                    "INSERT INTO requests (ts, route, model, status, prompt_tokens, completion_tokens, latency_s,"
                    " prompt_chars, prompt, pii_found) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    self._row(record),
                )
                self._conn.commit()
            except sqlite3.Error:
                pass  # a full disk must not take the API down; the record is lost, the request is not
            finally:
                self._queue.task_done()


def latest_drift(path: Path | None) -> dict[str, float]:
    """The newest drift row as numbers for the Prometheus gauge (empty when there is none)."""
    if path is None or not Path(path).is_file():
        return {}
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)
        try:
            row = conn.execute("SELECT status, psi_length, js_tokens, embedding_mmd, embedding_p FROM drift "
                               "ORDER BY id DESC LIMIT 1").fetchone()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    if row is None:
        return {}
    scores = {"status": float(DRIFT_LEVELS.get(row[0], -1))}
    for name, value in zip(("psi_length", "js_tokens", "embedding_mmd", "embedding_p"), row[1:], strict=True):
        if value is not None:
            scores[name] = float(value)
    return scores
