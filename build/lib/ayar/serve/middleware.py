"""The ASGI gate in front of every route: drain state, API keys, body size, metrics and the request log.

A plain ASGI middleware (not Starlette's BaseHTTPMiddleware) so that streamed responses pass through
untouched and a client that leaves mid-stream still reaches the route's cleanup.
"""

from __future__ import annotations

import hmac
import json
import time
from typing import Any

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ayar.serve.logging_db import RequestRecord

OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes must work without a key and while draining


class BodyTooLarge(HTTPException):
    """Raised from the wrapped ``receive``; FastAPI re-raises HTTPExceptions met while reading the body."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is over the limit of {limit} bytes")


def _error(status: int, message: str, code: str, headers: dict[str, str] | None = None) -> tuple[dict, bytes]:
    body = {"error": {"message": message, "type": {401: "authentication_error", 413: "invalid_request_error"}
                      .get(status, "service_unavailable"), "param": None, "code": code}}
    return headers or {}, json.dumps(body).encode()


def key_matches(header: str | None, keys: list[str]) -> bool:
    """True when ``Authorization: Bearer <key>`` names a configured key; constant-time for every key."""
    if not header or not header.startswith("Bearer "):
        return False
    given = header.removeprefix("Bearer ").strip().encode()
    matched = False
    for key in keys:  # no early exit: the time taken does not tell which key came close
        matched |= hmac.compare_digest(given, key.encode())
    return matched


class Gate:
    """Drain (503), auth (401) and body-size (413) checks, then in-flight counting, metrics and logging."""

    def __init__(self, app: ASGIApp, state: Any) -> None:
        self.app, self.state = app, state  # state: the FastAPI app.state (settings, metrics, log, flags)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        settings = self.state.settings
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if self.state.draining:
            await _send_error(send, 503, "server is shutting down; retry on another replica", "draining",
                              {"Retry-After": "5", "Connection": "close"})
            return
        if settings.api_keys and not key_matches(headers.get("authorization"), settings.api_keys):
            await _send_error(send, 401, "missing or invalid API key (send 'Authorization: Bearer <key>')",
                              "invalid_api_key", {"WWW-Authenticate": "Bearer"})
            return
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > settings.max_body_bytes:
            await _send_error(send, 413, f"request body is {length} bytes; the limit is "
                              f"{settings.max_body_bytes}", "body_too_large")
            return
        await self._pass(scope, _limited(receive, settings.max_body_bytes), send, path)

    async def _pass(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        started, status = time.monotonic(), 500
        scope.setdefault("state", {})

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.state.inflight += 1
        try:
            await self.app(scope, receive, send_status)
        finally:
            self.state.inflight -= 1
            self._account(scope, path, status, time.monotonic() - started)

    def _account(self, scope: Scope, path: str, status: int, seconds: float) -> None:
        route = path if path in self.state.known_paths else "other"  # no label per fuzzed path
        self.state.metrics.requests.labels(route, str(status)).inc()
        self.state.metrics.latency.labels(route).observe(seconds)
        info: dict[str, Any] = scope["state"].get("ayar_log", {})
        log = self.state.request_log
        if log is None or not path.startswith("/v1/") or path == "/v1/models" or info.get("skip"):
            return
        log.log(RequestRecord(route=route, status=status, latency_s=seconds, model=info.get("model"),
                              prompt_tokens=info.get("prompt_tokens"),
                              completion_tokens=info.get("completion_tokens"), prompt=info.get("prompt"),
                              completion_id=info.get("completion_id"), completion=info.get("completion")))


def _limited(receive: Receive, limit: int) -> Receive:
    """A receive that fails once more than ``limit`` body bytes came (chunked bodies carry no length)."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


async def _send_error(send: Send, status: int, message: str, code: str,
                      extra: dict[str, str] | None = None) -> None:
    headers, body = _error(status, message, code, extra)
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
