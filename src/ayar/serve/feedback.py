"""``POST /v1/feedback``: a user's verdict on a served completion, stored beside it in the request log.

Body: ``{"id": "<completion id>", "rating": "up" | "down", "correction": "<a better answer>",
"preferred_id": "<another completion id>"}``; ``id`` and at least one of the others. The completion must
be in the request log (serve with ``--log-db``; a request sent with ``"log": false`` never is, so its
feedback is refused as unknown: consent holds). The correction's text is kept only with text logging on,
PII-redacted like prompts; ``ayar iterate`` reads it back (``ayar.serve.logging_db.read_feedback``) and
turns it into training data.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ayar.serve.logging_db import FeedbackRecord

MAX_CORRECTION_CHARS = 20_000


class FeedbackRequest(BaseModel):
    """The body of ``POST /v1/feedback``."""

    model_config = ConfigDict(extra="forbid")  # a misspelt field would otherwise drop the user's verdict

    id: str = Field(min_length=1, max_length=200, description="The completion's id, as the API returned it.")
    rating: Literal["up", "down"] | None = Field(None, description="Thumbs up or down.")
    correction: str | None = Field(None, min_length=1, max_length=MAX_CORRECTION_CHARS,
                                   description="The answer the user wanted instead.")
    preferred_id: str | None = Field(None, min_length=1, max_length=200,
                                     description="Another completion of the same prompt that the user preferred.")

    @field_validator("correction")
    @classmethod
    def _valid_text(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("text is not valid Unicode (lone surrogate)") from None
            if not value.strip():
                raise ValueError("the correction is empty")
        return value

    @model_validator(mode="after")
    def _says_something(self) -> FeedbackRequest:
        if self.rating is None and self.correction is None and self.preferred_id is None:
            raise ValueError("give a rating ('up' or 'down'), a correction or a preferred_id")
        if self.preferred_id == self.id:
            raise ValueError("preferred_id names the same completion as id")
        return self


def add_feedback_route(app: FastAPI, api_error: type) -> None:
    """Register ``POST /v1/feedback`` (``api_error``: the app's error class, status + message + param + code)."""

    @app.post("/v1/feedback", summary="Rate a completion, correct it, or name a preferred one (needs the log).")
    async def feedback(body: FeedbackRequest, request: Request) -> dict[str, str]:
        log = request.app.state.request_log
        request.scope["state"]["ayar_log"] = {"skip": True}  # stored in the feedback table, not as a request
        if log is None:
            raise api_error(404, "feedback needs the request log: serve with --log-requests (or --log-text) and "
                            "--log-db", code="feedback_disabled")
        await asyncio.to_thread(log.flush)  # a completion answered a moment ago may still be queued
        for field, value in (("id", body.id), ("preferred_id", body.preferred_id)):
            if value is not None and not await asyncio.to_thread(log.has_completion, value):
                raise api_error(404, f"no logged completion with id '{value}' (unknown, failed, or sent with "
                                "\"log\": false)", field, "completion_not_found")
        log.log(FeedbackRecord(body.id, body.rating, body.correction, body.preferred_id))
        return {"object": "feedback", "id": body.id, "status": "stored"}
