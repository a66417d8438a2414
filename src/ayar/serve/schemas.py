"""Request bodies of the OpenAI-compatible API and its error object."""

from __future__ import annotations

from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


class FunctionCall(_Body):
    name: str
    arguments: str | dict[str, Any] = Field("{}", description="The arguments as a JSON object (or its text).")


class ToolCall(_Body):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = Field(
        None, description="The message text (or a list of text parts); may be empty on an assistant turn with "
        "tool_calls.")
    tool_calls: list[ToolCall] | None = Field(None, description="The calls an assistant turn made.")
    tool_call_id: str | None = Field(None, description="On a tool turn: the call it answers.")
    name: str | None = None

    _valid = field_validator("content")(
        lambda v: _no_lone_surrogates(v) if isinstance(v, str) else v
    )

    @model_validator(mode="after")
    def _has_content(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError(f"a {self.role} message needs content")
        return self

    def text(self) -> str:
        if self.content is None:
            return ""
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)

    def as_message(self) -> dict[str, Any]:
        """The message as chat templates take it (tool-call arguments as objects)."""
        message: dict[str, Any] = {"role": "system" if self.role == "developer" else self.role,
                                   "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [c.model_dump(exclude_none=True) for c in self.tool_calls]
        for key in ("tool_call_id", "name"):
            if getattr(self, key) is not None and self.role == "tool":
                message[key] = getattr(self, key)
        return message


class FunctionSchema(_Body):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Body):
    type: Literal["function"] = "function"
    function: FunctionSchema


class JsonSchemaFormat(_Body):
    name: str = Field("response", description="The schema's name.")
    description: str | None = None
    json_schema: dict[str, Any] = Field(default_factory=dict, alias="schema",
                                        description="The JSON schema the answer must match.")
    strict: bool | None = None

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class ResponseFormat(_Body):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None

    @model_validator(mode="after")
    def _schema_given(self) -> ResponseFormat:
        if self.type == "json_schema" and self.json_schema is None:
            raise ValueError("type json_schema needs json_schema: {name, schema}")
        return self

    def schema_of_answer(self) -> dict[str, Any] | None:
        """The JSON schema the answer must match (any object for json_object); None: free text."""
        if self.type == "text":
            return None
        if self.type == "json_object":
            from ayar.serve.constrained import json_object_schema

            return json_object_schema()
        return self.json_schema.json_schema if self.json_schema else None


class StreamOptions(_Body):
    include_usage: bool = False


MAX_CHOICES = 16
MAX_TOP_LOGPROBS = 20


class _Sampling(_Body):
    model: str = Field(description="A name from GET /v1/models.")
    max_tokens: int | None = Field(None, ge=1, description="New tokens at most (default: what the context allows).")
    temperature: float | None = Field(None, ge=0, le=2, description="0 means greedy decoding "
                                      "(default: the model's generation_config.json, else 1).")
    top_p: float | None = Field(None, gt=0, le=1, description="Default: the model's generation_config.json, else 1.")
    n: int = Field(1, ge=1, le=MAX_CHOICES, description="Choices per prompt: n samples (a seed makes them "
                   "repeatable: choice i samples with seed + i).")
    stop: str | list[str] | None = Field(None, description="Up to 4 stop strings.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    stream: bool = False
    stream_options: StreamOptions | None = None
    min_tokens: int = Field(0, ge=0, description="vLLM extension: generate at least this many tokens.")
    top_k: int | None = Field(None, ge=-1, description="vLLM extension: sample among the k most likely tokens "
                              "(0 or -1: all; default: the model's generation_config.json).")
    repetition_penalty: float | None = Field(None, gt=0, description="vLLM extension: divide the scores of "
                                             "tokens already in the text (1: off; default: the model's).")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Not carried out: a non-zero value is a 400.")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Not carried out: a non-zero value is a 400.")
    logit_bias: dict[str, float] | None = Field(None, description="Not carried out: a non-empty map is a 400.")
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

    def asked_features(self) -> list[str]:
        """The optional fields set to a value that changes the answer: each must be one the engine carries
        out (a field left at its neutral value asks nothing)."""
        asked = {"frequency_penalty": self.frequency_penalty != 0, "presence_penalty": self.presence_penalty != 0,
                 "logit_bias": bool(self.logit_bias)}
        return [name for name, wanted in asked.items() if wanted]


class ChatCompletionRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Newer name of max_tokens.")
    tools: list[Tool] | None = Field(None, description="Functions the model may call; rendered by the chat "
                                     "template, and calls in the template's format come back as tool_calls.")
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = Field(
        None, description="'none' hides the tools; 'auto' lets the model decide, and a call it opens is held to an "
        "offered function and its schema where the engine can; 'required' or a named function "
        "({type: function, function: {name}}) forces one call under a grammar (a 400 on an engine that cannot).")
    logprobs: bool = Field(False, description="Return the log-probability of each generated token.")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS,
                                     description="With logprobs: the most likely tokens at each position.")
    response_format: ResponseFormat | None = Field(
        None, description="json_object or json_schema: the answer is decoded under a JSON grammar.")
    parallel_tool_calls: bool | None = Field(None, description="false: one call at most, under a grammar (a 400 "
                                             "on an engine that cannot); else the model may call several at once.")

    def asked_features(self) -> list[str]:
        asked = {"logprobs": self.logprobs, "response_format": self.response_format is not None
                 and self.response_format.type != "text", "tool_choice": self.forced_tools() is not None,
                 # a forced call is exactly one call: false is then carried out
                 "parallel_tool_calls": self.parallel_tool_calls is False and self.forced_tools() is None}
        return super().asked_features() + [name for name, wanted in asked.items() if wanted]

    @model_validator(mode="after")
    def _forced_call_has_its_tool(self) -> ChatCompletionRequest:
        if self.tool_choice == "required" or isinstance(self.tool_choice, dict):
            if not self.tools:
                raise ValueError("tool_choice 'required' or a named function needs tools")
            if isinstance(self.tool_choice, dict) and not self.forced_tools():
                raise ValueError(f"tool_choice names {self.tool_choice.get('function')}, not one of the tools")
        return self

    def forced_tools(self) -> list[dict[str, Any]] | None:
        """The tools one of which the answer must call (tool_choice 'required', or the named function), or
        None where the model decides."""
        tools = self.tool_list()
        if not tools or self.tool_choice in (None, "auto"):
            return None
        if self.tool_choice == "required":
            return tools
        name = (self.tool_choice.get("function") or {}).get("name")  # type: ignore[union-attr]
        return [t for t in tools if t["function"]["name"] == name] or None

    def tool_list(self) -> list[dict[str, Any]] | None:
        """The tools as chat templates take them, or None (no tools, or tool_choice 'none')."""
        if not self.tools or self.tool_choice == "none":
            return None
        return [t.model_dump(exclude_none=True) for t in self.tools]

    @model_validator(mode="after")
    def _top_needs_logprobs(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs: true")
        return self

    def top_count(self) -> int | None:
        """Alternatives per token to return (None: no logprobs)."""
        return (self.top_logprobs or 0) if self.logprobs else None


class CompletionRequest(_Sampling):
    prompt: str | list[str] | list[int] | list[list[int]] = Field(
        description="A prompt, a list of prompts, a prompt as token ids, or a list of token-id prompts.")
    max_tokens: int | None = Field(None, ge=0, description="New tokens at most; 0 with echo scores the prompt "
                                   "without generating (default: what the context allows).")
    echo: bool = Field(False, description="Answer the prompt back before the completion (and score it with "
                       "logprobs).")
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS, description="Return each token's "
                                 "log-probability and this many most likely tokens at each position.")
    best_of: int | None = Field(None, ge=1, description="Not carried out: more candidates than n is a 400.")
    suffix: str | None = Field(None, description="Not carried out: a non-empty suffix is a 400.")

    def asked_features(self) -> list[str]:
        asked = {"logprobs": self.logprobs is not None, "best_of": (self.best_of or self.n) > self.n,
                 "suffix": bool(self.suffix)}
        return super().asked_features() + [name for name, wanted in asked.items() if wanted]

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, value: str | list[str] | list[int] | list[list[int]]) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("the prompt list is empty")
        for prompt in [value] if isinstance(value, str) else value:
            if isinstance(prompt, str):
                _no_lone_surrogates(prompt)
            elif isinstance(prompt, list) and any(token < 0 for token in prompt):
                raise ValueError("token ids are not negative")
        return value

    def prompt_list(self) -> list[str | list[int]]:
        """Each prompt as text or as token ids."""
        value = self.prompt
        if isinstance(value, str) or isinstance(value[0], int):
            return [value]  # type: ignore[list-item]
        return list(value)  # type: ignore[arg-type]
