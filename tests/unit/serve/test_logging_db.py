"""Reading feedback back from the request log: each verdict joined with the request it judges."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from ayar.errors import UsageError
from ayar.serve.logging_db import FEEDBACK_FIELDS, FeedbackRecord, RequestLog, RequestRecord, read_feedback


def _log(db: Path, log_text: bool) -> None:
    """Three served completions (one failed), then feedback on each of them."""
    log = RequestLog(db, log_text=log_text)
    for cid, prompt, answer, status in (("c1", "What is 2+2?", "5", 200), ("c2", "What is 2+2?", "4", 200),
                                        ("c3", "Capital of France?", "", 500)):
        log.log(RequestRecord("/v1/chat/completions", status, "tiny", prompt=prompt, completion=answer,
                              completion_id=cid))
    log.log(FeedbackRecord("c1", rating="down", correction="4"))
    log.log(FeedbackRecord("c1", preferred_id="c2"))
    log.log(FeedbackRecord("c3", rating="down"))  # a failed request: no answer to learn from
    log.flush()
    log.close()


def test_feedback_rows_carry_the_judged_request_and_the_preferred_completion(tmp_path: Path) -> None:
    db = tmp_path / "requests.sqlite"
    _log(db, log_text=True)
    rows = read_feedback(db)
    assert [set(r) for r in rows] == [set(FEEDBACK_FIELDS)] * 2
    corrected, preferred = rows
    assert (corrected["completion_id"], corrected["rating"], corrected["correction"], corrected["correction_chars"],
            corrected["prompt"], corrected["completion"]) == ("c1", "down", "4", 1, "What is 2+2?", "5")
    assert corrected["preferred_id"] is None and corrected["preferred"] is None
    assert (preferred["preferred_id"], preferred["preferred"], preferred["preferred_prompt"]) == (
        "c2", "4", "What is 2+2?")
    assert corrected["feedback_id"] < preferred["feedback_id"]  # in the order the users sent them


def test_without_text_logging_only_the_counts_come_back(tmp_path: Path) -> None:
    db = tmp_path / "requests.sqlite"
    _log(db, log_text=False)
    corrected, preferred = read_feedback(db)
    assert (corrected["prompt"], corrected["completion"], corrected["correction"]) == (None, None, None)
    assert corrected["correction_chars"] == 1 and corrected["rating"] == "down"
    assert preferred["preferred_id"] == "c2" and preferred["preferred"] is None


def test_a_missing_log_or_one_without_feedback_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="request log not found"):
        read_feedback(tmp_path / "missing.sqlite")
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old)
    conn.execute("CREATE TABLE requests (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(UsageError, match="holds no feedback table"):
        read_feedback(old)
