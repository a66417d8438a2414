"""POST /v1/feedback through the HTTP app: stored beside the logged completion, redacted, consent, 4xx."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from ayar.serve.app import ServeSettings

CHAT = "/v1/chat/completions"


def _ask(client, content: str = "Say hi", **extra: object) -> dict:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 3, "min_tokens": 3}
    response = client.post(CHAT, json={**body, **extra})
    assert response.status_code == 200
    return response.json()


def _table(db: Path, table: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    return conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()


def test_feedback_is_stored_with_the_logged_completion(make_client, tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    client = make_client(ServeSettings(log_db=db, log_requests=True, log_text=True))
    first, second = _ask(client, "Capital of France?"), _ask(client, "Capital of France?")
    correction = "Paris. Write to ayse.yilmaz@example.com"
    response = client.post("/v1/feedback", json={"id": first["id"], "rating": "down", "correction": correction})
    assert response.status_code == 200 and response.json()["status"] == "stored"
    assert client.post("/v1/feedback", json={"id": first["id"], "preferred_id": second["id"]}).status_code == 200
    client.app.state.request_log.flush()
    requests = {r["completion_id"]: r for r in _table(db, "requests")}
    assert set(requests) == {first["id"], second["id"]}  # feedback calls are not logged as requests
    assert requests[first["id"]]["completion"] == first["choices"][0]["message"]["content"]
    assert requests[first["id"]]["prompt"] == "Capital of France?"
    rated, preferred = _table(db, "feedback")
    assert (rated["completion_id"], rated["rating"], rated["preferred_id"]) == (first["id"], "down", None)
    assert "ayse.yilmaz@example.com" not in rated["correction"] and rated["correction"].startswith("Paris.")
    assert rated["pii_found"] == 1 and rated["correction_chars"] == len(correction)
    assert (preferred["rating"], preferred["preferred_id"]) == (None, second["id"])


def test_without_text_logging_no_text_is_kept(make_client, tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    client = make_client(ServeSettings(log_db=db, log_requests=True))
    answer = _ask(client)
    assert client.post("/v1/feedback", json={"id": answer["id"], "rating": "up",
                                             "correction": "better"}).status_code == 200
    client.app.state.request_log.flush()
    (request,), (feedback,) = _table(db, "requests"), _table(db, "feedback")
    assert request["completion_id"] == answer["id"] and request["completion"] is None and request["prompt"] is None
    assert feedback["rating"] == "up" and feedback["correction"] is None and feedback["correction_chars"] == 6


def test_unknown_ids_bad_bodies_and_opted_out_requests_get_4xx(make_client, tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    client = make_client(ServeSettings(log_db=db, log_requests=True, log_text=True))
    known = _ask(client)["id"]
    private = _ask(client, "keep this private", log=False)["id"]
    cases = [
        ({"id": "chatcmpl-nope", "rating": "up"}, 404, "id"),
        ({"id": private, "rating": "up"}, 404, "id"),  # "log": false: never stored, so no feedback either
        ({"id": known, "preferred_id": "chatcmpl-nope"}, 404, "preferred_id"),
        ({"id": known}, 422, None),  # says nothing
        ({"id": known, "rating": "meh"}, 422, "rating"),
        ({"id": known, "rating": "up", "stars": 5}, 422, "stars"),
        ({"id": known, "correction": "   "}, 422, "correction"),
        ({"id": known, "preferred_id": known}, 422, None),
    ]
    for body, status, param in cases:
        response = client.post("/v1/feedback", json=body)
        assert response.status_code == status, body
        if param:
            assert response.json()["error"]["param"] == param, body
    assert client.post("/v1/feedback", content=b"{not json", headers={"content-type": "application/json"}
                       ).status_code == 400
    client.app.state.request_log.flush()
    assert _table(db, "feedback") == []


def test_feedback_needs_the_log_and_the_api_key(make_client, tmp_path: Path) -> None:
    client = make_client(ServeSettings())
    answer = _ask(client)
    response = client.post("/v1/feedback", json={"id": answer["id"], "rating": "up"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "feedback_disabled"
    keyed = make_client(ServeSettings(api_keys=["k1"], log_db=tmp_path / "r.sqlite", log_requests=True))
    assert keyed.post("/v1/feedback", json={"id": "x", "rating": "up"}).status_code == 401
    ok = keyed.post(CHAT, headers={"Authorization": "Bearer k1"},
                    json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert keyed.post("/v1/feedback", headers={"Authorization": "Bearer k1"},
                      json={"id": ok.json()["id"], "rating": "up"}).status_code == 200


def test_an_older_log_gains_the_new_columns(tmp_path: Path) -> None:
    from ayar.serve.logging_db import connect

    db = tmp_path / "old.sqlite"
    old = sqlite3.connect(db)
    old.execute("CREATE TABLE requests (id INTEGER PRIMARY KEY AUTOINCREMENT, ts REAL NOT NULL, route TEXT NOT NULL,"
                " model TEXT, status INTEGER NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER, latency_s "
                "REAL, prompt_chars INTEGER, prompt TEXT, pii_found INTEGER)")
    old.execute("INSERT INTO requests (ts, route, status) VALUES (1, '/v1/completions', 200)")
    old.commit()
    old.close()
    conn = connect(db)
    columns = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
    assert {"completion_id", "completion"} <= columns
    assert conn.execute("SELECT count(*) FROM requests").fetchone()[0] == 1
