"""Request bodies of the OpenAI-compatible API and its error object."""

from __future__ import annotations

from typing import Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_SEED = 2**63 - 1
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
    405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
    429: "rate_limit_error", 503: "service_unavailable", 504: "timeout",
}


def error_response(status: int, message: str, param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    """An OpenAI-style error: ``{"error": {"message", "type", "param", "code"}}``."""
    body = {"error": {"message": message, "type": ERROR_TYPES.get(status, "server_error"), "param": param,
                      "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def _no_lone_surrogates(text: str) -> str:
    """JSON may carry lone UTF-16 surrogates; no tokenizer can encode them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("text is not valid Unicode (lone surrogate)") from None
    return text


class _Body(BaseModel):
    # Unknown fields are ignored, as OpenAI clients send fields (penalties, logprobs...) this server lacks.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Body):
    type: Literal["text"] = "text"
    text: str

    _valid = field_validator("text")(_no_lone_surrogates)


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(description="The message text (or a list of text parts).")

    _valid = field_validator("content")(
        lambda v: _no_lone_surrogates(v) if isinstance(v, str) else v
    )

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


class _Sampling(_Body):
    model: str = Field(description="A name from GET /v1/models.")
    max_tokens: int | None = Field(None, ge=1, description="New tokens at most (default: what the context allows).")
    temperature: float | None = Field(None, ge=0, le=2, description="0 means greedy decoding "
                                      "(default: the model's generation_config.json, else 1).")
    top_p: float | None = Field(None, gt=0, le=1, description="Default: the model's generation_config.json, else 1.")
    n: int = Field(1, ge=1, le=1, description="Only one choice per request.")
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    min_tokens: int = Field(0, ge=0, description="vLLM extension: generate at least this many tokens.")
    log: bool = Field(True, description="ayar extension: false keeps this request out of the request log.")
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings")
        for stop in stops:
            _no_lone_surrogates(stop)
        return value

    def stop_list(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else self.stop or []
        return [s for s in stops if s]


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens.")


class CompletionRequest(_Sampling):
    prompt: str | list[str] = Field(description="One prompt (a list must hold exactly one).")

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value: str | list[str]) -> str | list[str]:
        prompts = [value] if isinstance(value, str) else value
        if len(prompts) != 1:
            raise ValueError("exactly one prompt per request (n=1, no batched prompts)")
        _no_lone_surrogates(prompts[0])
        return value

    def prompt_text(self) -> str:
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]
