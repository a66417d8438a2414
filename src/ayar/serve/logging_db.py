"""The request log: one SQLite row per request (WAL mode), written off the event loop by one thread.

Off by default: what users send is theirs. Counts and timings are logged when logging is on; the
prompt's text only when text logging is on too, and then PII-redacted with the data pipeline's detectors.
The schema's readers live here too: ``read_feedback`` (for ``ayar iterate``) and ``latest_drift``.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ayar.errors import UsageError

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
    pii_found INTEGER,
    completion_id TEXT,
    completion TEXT
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    completion_id TEXT NOT NULL,
    rating TEXT,
    correction TEXT,
    correction_chars INTEGER,
    preferred_id TEXT,
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
# Each feedback row with the request it judges (failed requests carry no answer to judge) and, when the user
# named a preferred completion, that completion's prompt and text.
FEEDBACK_SQL = """
SELECT f.id, f.completion_id, f.rating, f.correction, f.correction_chars, f.preferred_id,
       r.prompt, r.completion, p.completion, p.prompt
FROM feedback f JOIN requests r ON r.completion_id = f.completion_id AND r.status < 400
LEFT JOIN requests p ON p.completion_id = f.preferred_id
ORDER BY f.id
"""
FEEDBACK_FIELDS = ("feedback_id", "completion_id", "rating", "correction", "correction_chars", "preferred_id",
                   "prompt", "completion", "preferred", "preferred_prompt")


def connect(path: Path) -> sqlite3.Connection:
    """Open (and create) a request-log database in WAL mode, so readers never block the server's writes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(path), timeout=10, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(SCHEMA)
    _add_missing_columns(conn)
    return conn


ADDED_COLUMNS = {"requests": (("completion_id", "TEXT"), ("completion", "TEXT"))}  # columns newer than a log


def _add_missing_columns(conn: sqlite3.Connection) -> None:
    """A log written by an older ayar gains the columns added since (SQLite adds them as NULL)."""
    for table, columns in ADDED_COLUMNS.items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        for name, kind in columns:
            if name not in have:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")
    conn.execute("CREATE INDEX IF NOT EXISTS requests_completion_id ON requests (completion_id)")
    conn.commit()


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
    completion_id: str | None = None  # the id the client got back (chatcmpl-..., cmpl-...), for feedback
    completion: str | None = None  # the generated text; dropped unless text logging is on


@dataclass
class FeedbackRecord:
    """A user's verdict on one logged completion (``POST /v1/feedback``)."""

    completion_id: str
    rating: str | None = None  # "up" or "down"
    correction: str | None = None  # a better answer; its text is dropped unless text logging is on
    preferred_id: str | None = None  # another completion (of the same prompt) the user preferred


class RequestLog:
    """Writes RequestRecords to SQLite from a background thread."""

    def __init__(self, path: Path, log_text: bool = False, pii_types: list[str] | None = None) -> None:
        from ayar.data.pii import redact_pii  # the data pipeline's detectors, so logs and training agree

        self.path, self.log_text, self.pii_types = Path(path), log_text, pii_types
        self._redact = redact_pii
        self._queue: queue.Queue[RequestRecord | FeedbackRecord | None] = queue.Queue()
        self._conn = connect(self.path)
        # Feedback checks ids from the event loop's threads while the writer thread writes: its own connection.
        self._reader = sqlite3.connect(str(self.path), timeout=10, check_same_thread=False)
        self._read_lock = threading.Lock()
        self._thread = threading.Thread(target=self._write_loop, name="ayar-request-log", daemon=True)
        self._thread.start()

    def log(self, record: RequestRecord | FeedbackRecord) -> None:
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
        self._reader.close()

    def _redacted(self, *texts: str | None) -> tuple[list[str | None], int | None]:
        """The texts PII-redacted, with the count of what was found; all None unless text logging is on."""
        if not self.log_text:
            return [None] * len(texts), None
        out, found = [], 0
        for text in texts:
            if text is None:
                out.append(None)
                continue
            redacted, counts = self._redact(text, self.pii_types)
            out.append(redacted)
            found += sum(counts.values())
        return out, found

    def _row(self, r: RequestRecord) -> tuple[Any, ...]:
        (text, completion), found = self._redacted(r.prompt, r.completion)
        if r.prompt is None and r.completion is None:
            found = None
        chars = len(r.prompt) if r.prompt is not None else None
        return (time.time(), r.route, r.model, r.status, r.prompt_tokens, r.completion_tokens, r.latency_s,
                chars, text, found, r.completion_id, completion)

    def _write(self, record: RequestRecord | FeedbackRecord) -> None:
        if isinstance(record, FeedbackRecord):
            (correction,), found = self._redacted(record.correction)
            chars = len(record.correction) if record.correction is not None else None
            self._conn.execute(
                "INSERT INTO feedback (ts, completion_id, rating, correction, correction_chars, preferred_id, "
                "pii_found) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), record.completion_id, record.rating, correction, chars, record.preferred_id, found))
        else:
            self._conn.execute(
                "INSERT INTO requests (ts, route, model, status, prompt_tokens, completion_tokens, latency_s,"
                " prompt_chars, prompt, pii_found, completion_id, completion) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?,"
                " ?, ?, ?)",
                self._row(record),
            )
        self._conn.commit()

    def has_completion(self, completion_id: str) -> bool:
        """True when a successful request with this completion id is in the log (call ``flush`` first)."""
        with self._read_lock:
            row = self._reader.execute("SELECT 1 FROM requests WHERE completion_id = ? AND status < 400 LIMIT 1",
                                       (completion_id,)).fetchone()
        return row is not None

    def _write_loop(self) -> None:
        while True:
            record = self._queue.get()
            try:
                if record is None:
                    return
                self._write(record)
            except sqlite3.Error:
                pass  # a full disk must not take the API down; the record is lost, the request is not
            finally:
                self._queue.task_done()


def read_feedback(path: Path) -> list[dict[str, Any]]:
    """Every feedback row joined with its logged request (and the preferred completion's text, if any).

    Keys: ``FEEDBACK_FIELDS``; ``prompt``, ``completion``, ``correction`` and ``preferred`` are None where the
    server ran without text logging. The log is opened read-only, so a running server keeps writing.
    """
    if not Path(path).is_file():
        raise UsageError(f"request log not found: {path} (serve with --log-text --log-db {path})")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(FEEDBACK_SQL).fetchall()
    except sqlite3.Error as exc:
        raise UsageError(f"{path} holds no feedback table (an ayar request log from before /v1/feedback?): "
                         f"{exc}") from None
    finally:
        conn.close()
    return [dict(zip(FEEDBACK_FIELDS, row, strict=True)) for row in rows]


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
