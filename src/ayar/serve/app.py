"""The OpenAI-compatible HTTP API: chat and text completions (streamed or not), models, probes, metrics, feedback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ayar.recipe import ServeConfig
from ayar.serve.engine import Job, QueuedEngine, QueueFullError, SamplingParams
from ayar.serve.feedback import add_feedback_route
from ayar.serve.logging_db import RequestLog, latest_drift
from ayar.serve.metrics import ServerMetrics
from ayar.serve.middleware import Gate
from ayar.serve.schemas import ChatCompletionRequest, CompletionRequest, error_response

_DEFAULTS = ServeConfig()  # defaults live in the recipe schema only


@dataclass
class ServeSettings:
    """Server behaviour (the CLI's options and the recipe's serve section map onto these)."""

    api_keys: list[str] = field(default_factory=list)
    max_body_bytes: int = _DEFAULTS.max_body_bytes
    request_timeout: float = _DEFAULTS.request_timeout
    default_max_tokens: int = _DEFAULTS.default_max_tokens
    log_db: Path | None = _DEFAULTS.log_db
    log_requests: bool = _DEFAULTS.log_requests
    log_text: bool = _DEFAULTS.log_text

    @classmethod
    def from_config(cls, cfg: ServeConfig, api_keys: list[str] | None = None,
                    default_log_db: Path | None = None) -> ServeSettings:
        """Settings from a recipe's serve section; the log goes to ``default_log_db`` when none is named."""
        return cls(api_keys=api_keys or [], max_body_bytes=cfg.max_body_bytes, request_timeout=cfg.request_timeout,
                   default_max_tokens=cfg.default_max_tokens, log_db=cfg.log_db or default_log_db,
                   log_requests=cfg.log_requests or cfg.log_text, log_text=cfg.log_text)


class ApiError(HTTPException):
    """An error with an OpenAI error object; ``param`` names the offending field."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(status, message, headers)
        self.param, self.code = param, code


def create_app(settings: ServeSettings | None = None, engine: QueuedEngine | None = None,
               loader: Callable[[], QueuedEngine] | None = None) -> FastAPI:
    """The API over a started engine, or over ``loader()`` run in the background (readyz waits for it)."""
    settings = settings or ServeSettings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if app.state.engine is None and loader is not None:
            threading.Thread(target=_load, args=(app, loader), name="ayar-load", daemon=True).start()
        yield
        if app.state.engine is not None:
            await asyncio.to_thread(app.state.engine.stop)
        if app.state.request_log is not None:
            app.state.request_log.close()

    app = FastAPI(title="ayar", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings, app.state.engine = settings, engine
    app.state.load_error, app.state.draining, app.state.inflight = None, False, 0
    app.state.request_log = (RequestLog(settings.log_db, settings.log_text)
                             if settings.log_requests and settings.log_db else None)
    app.state.metrics = ServerMetrics(lambda: app.state.engine.queue_depth if app.state.engine else 0,
                                      lambda: latest_drift(settings.log_db))
    _add_error_handlers(app)
    _add_routes(app)
    app.state.known_paths = frozenset(getattr(r, "path", "") for r in app.routes)
    app.add_middleware(Gate, state=app.state)
    return app


def _load(app: FastAPI, loader: Callable[[], QueuedEngine]) -> None:
    try:
        app.state.engine = loader().start()
    except Exception as exc:
        app.state.load_error = f"{type(exc).__name__}: {exc}"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), getattr(exc, "param", None),
                              getattr(exc, "code", None), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": ""}
        if first["type"] == "json_invalid":
            return error_response(400, f"request body is not valid JSON: {first.get('ctx', {}).get('error', '')}",
                                  code="invalid_json")
        param = ".".join(str(p) for p in first["loc"] if p != "body") or None
        return error_response(422, f"{param or 'body'}: {first['msg']}", param, code=first["type"])

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, f"internal error: {type(exc).__name__}", code="internal_error")


def _engine(request: Request) -> QueuedEngine:
    engine = request.app.state.engine
    if engine is None or not engine.alive:
        reason = request.app.state.load_error or "the model is still loading"
        raise ApiError(503, f"not ready: {reason}", code="not_ready", headers={"Retry-After": "5"})
    return engine


def _check_model(engine: QueuedEngine, name: str) -> None:
    if name not in engine.names:
        raise ApiError(404, f"model '{name}' does not exist; served: {', '.join(engine.names)}", "model",
                       "model_not_found")


def _add_routes(app: FastAPI) -> None:
    _add_probe_routes(app)
    _add_model_routes(app)
    _add_completion_routes(app)
    add_feedback_route(app, ApiError)


def _add_probe_routes(app: FastAPI) -> None:
    @app.get("/healthz", summary="Liveness: the process answers.")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: the model is loaded and the server is not draining.")
    async def readyz(request: Request) -> JSONResponse:
        state = request.app.state
        if state.draining:
            return error_response(503, "draining", code="draining")
        if state.engine is None or not state.engine.alive:
            return error_response(503, f"not ready: {state.load_error or 'loading'}", code="not_ready")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", summary="Prometheus metrics.")
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(request.app.state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _add_model_routes(app: FastAPI) -> None:
    @app.get("/v1/models", summary="The served model names.")
    async def models(request: Request) -> dict[str, Any]:
        engine = _engine(request)
        return {"object": "list", "data": [_model_card(name) for name in engine.names]}

    @app.get("/v1/models/{model}", summary="One served model.")
    async def model(model: str, request: Request) -> dict[str, Any]:
        engine = _engine(request)
        _check_model(engine, model)
        return _model_card(model)


def _add_completion_routes(app: FastAPI) -> None:
    @app.post("/v1/chat/completions", summary="Chat completion (OpenAI format; stream: true for SSE).")
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        engine = _engine(request)
        _check_model(engine, body.model)
        if not engine.has_chat_template():
            raise ApiError(400, "this model has no chat template: use /v1/completions", "messages",
                           "no_chat_template")
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        tools = body.tool_list()
        ids = _encode_chat(engine, body, messages, tools)
        user_text = "\n".join(m["content"] for m in messages if m["role"] == "user")
        return await _complete(request, engine, body, ids, user_text, chat=True,
                               max_tokens=body.max_completion_tokens or body.max_tokens, tools=tools)

    @app.post("/v1/completions", summary="Text completion (OpenAI format; stream: true for SSE).")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        engine = _engine(request)
        _check_model(engine, body.model)
        text = body.prompt_text()
        return await _complete(request, engine, body, engine.encode_text(text), text, chat=False,
                               max_tokens=body.max_tokens)


def _encode_chat(engine: QueuedEngine, body: ChatCompletionRequest, messages: list[dict[str, str]],
                 tools: list[dict[str, Any]] | None) -> list[int]:
    """Token ids of the conversation; a conversation the template rejects is the client's 400."""
    try:
        if tools or any(m.role == "tool" or m.tool_calls for m in body.messages):
            return _encode_with_tools(engine, body, tools)
        return engine.encode_chat(messages)
    except ApiError:
        raise
    except Exception as exc:
        raise ApiError(400, f"the chat template rejects these messages: {exc}", "messages") from None


def _encode_with_tools(engine: QueuedEngine, body: ChatCompletionRequest, tools: list[dict[str, Any]] | None) -> list[int]:
    """Token ids of a conversation with tools, tool calls or tool outputs, rendered by the template's tool
    support as training rendered it; a template without tool support is the client's 400."""
    from ayar.data.chat import RecordError, normalize_message
    from ayar.data.templates import render_prompt
    from ayar.data.tokenize import check_tools_rendered
    from ayar.errors import UsageError

    try:
        messages = [normalize_message(m.as_message(), f"messages[{i}]") for i, m in enumerate(body.messages)]
        check_tools_rendered(engine.tokenizer, messages, tools)
    except RecordError as exc:
        raise ApiError(400, str(exc), "messages") from None
    except UsageError as exc:
        raise ApiError(400, str(exc).replace("Set data.template", "Train with data.template"), "tools",
                       "template_without_tools") from None
    return engine.encode_text(render_prompt(engine.tokenizer, messages, tools))


def _tool_answer(text: str, tools: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, OpenAI tool_calls) of a generated answer; arguments go back as JSON text, as OpenAI sends them."""
    from ayar.data.templates import parse_tool_calls

    content, calls = parse_tool_calls(text, tools)
    out = [{"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
            "function": {"name": c["function"]["name"],
                         "arguments": json.dumps(c["function"]["arguments"], ensure_ascii=False)}} for c in calls]
    return (content or None) if out else content, out


def _model_card(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "ayar"}


def _token_budget(engine: QueuedEngine, prompt_tokens: int, requested: int | None, default: int) -> int:
    """max_tokens for the job; a prompt that leaves no room is the client's 400, told by how much."""
    ctx = engine.context_length
    if requested is None:
        if prompt_tokens >= ctx:
            raise ApiError(400, f"prompt is {prompt_tokens} tokens, {prompt_tokens - ctx + 1} over the model's "
                           f"context window of {ctx} tokens (with room for one new token)", "messages",
                           "context_length_exceeded")
        return min(default, ctx - prompt_tokens)
    if prompt_tokens + requested > ctx:
        raise ApiError(400, f"prompt ({prompt_tokens} tokens) + max_tokens ({requested}) is "
                       f"{prompt_tokens + requested - ctx} tokens over the context window of {ctx}",
                       "max_tokens", "context_length_exceeded")
    return requested


async def _complete(request: Request, engine: QueuedEngine, body: Any, ids: list[int], user_text: str, chat: bool,
                    max_tokens: int | None, tools: list[dict[str, Any]] | None = None) -> Response:
    """Queue the job and answer in one piece or as server-sent events."""
    state, settings = request.app.state, request.app.state.settings
    if not ids:  # an empty prompt: start from the beginning-of-text token
        ids = [engine.tokenizer.bos_token_id if engine.tokenizer.bos_token_id is not None
               else engine.tokenizer.eos_token_id]
    budget = _token_budget(engine, len(ids), max_tokens, settings.default_max_tokens)
    log_info = {"model": body.model, "prompt_tokens": len(ids), "skip": not body.log,
                "prompt": user_text}  # RequestLog keeps only its length unless text logging is on
    request.scope["state"]["ayar_log"] = log_info
    loop, events = asyncio.get_running_loop(), asyncio.Queue()
    params = SamplingParams(budget, body.temperature, body.top_p, body.stop_list(), body.seed, body.min_tokens)
    job = Job(body.model, ids, params, time.monotonic() + settings.request_timeout,
              emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
    try:
        engine.submit(job)
    except QueueFullError as exc:
        raise ApiError(429, str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after)}) from None
    state.metrics.prompt_tokens.labels(body.model).inc(len(ids))
    reply = _Reply(body.model, chat, len(ids))
    log_info["completion_id"] = reply.id  # what /v1/feedback names the answer by
    reply.tools = tools
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return StreamingResponse(_stream(job, events, reply, include_usage, state, log_info),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    text, finish, completion_tokens = "", "stop", 0
    while True:
        event = await events.get()
        if event.kind == "delta":
            text += event.value
        elif event.kind == "error":
            raise ApiError(500, event.value, code="generation_failed")
        else:
            finish, completion_tokens = event.value, event.tokens
            break
    log_info["completion_tokens"], log_info["completion"] = completion_tokens, text
    state.metrics.generated_tokens.labels(body.model).inc(completion_tokens)
    if finish == "timeout":
        raise ApiError(504, f"generation took longer than the request timeout of {settings.request_timeout:g} s",
                       code="timeout")
    return JSONResponse(reply.full(text, finish, completion_tokens))


class _Reply:
    """Builds OpenAI response and chunk objects for one request."""

    def __init__(self, model: str, chat: bool, prompt_tokens: int) -> None:
        self.model, self.chat, self.prompt_tokens = model, chat, prompt_tokens
        self.tools: list[dict[str, Any]] | None = None  # with tools, answers are parsed for tool calls
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self.object = "chat.completion" if chat else "text_completion"

    def usage(self, completion_tokens: int) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": completion_tokens,
                "total_tokens": self.prompt_tokens + completion_tokens}

    def _envelope(self, obj: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": self.id, "object": obj, "created": self.created, "model": self.model, "choices": choices}

    def full(self, text: str, finish: str, completion_tokens: int) -> dict[str, Any]:
        if self.chat:
            message: dict[str, Any] = {"role": "assistant", "content": text}
            if self.tools:
                message["content"], calls = _tool_answer(text, self.tools)
                if calls:
                    message["tool_calls"], finish = calls, "tool_calls"
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text, "finish_reason": finish, "logprobs": None}
        return {**self._envelope(self.object, [choice]), "usage": self.usage(completion_tokens)}

    def chunk(self, text: str | None, finish: str | None = None, first: bool = False) -> str:
        if self.chat:
            delta: dict[str, str] = {"role": "assistant", "content": ""} if first else {}
            if text:
                delta["content"] = text
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            return _sse(self._envelope("chat.completion.chunk", [choice]))
        choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return _sse(self._envelope("text_completion", [choice]))

    def tool_chunk(self, content: str | None, calls: list[dict[str, Any]]) -> str:
        """One chunk with a parsed answer: its text and its tool calls (each with its index, as OpenAI streams)."""
        delta: dict[str, Any] = {"content": content}
        if calls:
            delta["tool_calls"] = [{"index": i, **call} for i, call in enumerate(calls)]
        choice = {"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}
        return _sse(self._envelope("chat.completion.chunk", [choice]))

    def usage_chunk(self, completion_tokens: int) -> str:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return _sse({**self._envelope(obj, []), "usage": self.usage(completion_tokens)})


def _sse(data: dict[str, Any]) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _stream(job: Job, events: asyncio.Queue, reply: _Reply, include_usage: bool, state: Any,
                  log_info: dict[str, Any]) -> AsyncIterator[str]:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.

    When the client leaves, Starlette stops this generator; ``finally`` then cancels the job, which
    stops ``generate`` at its next token.
    """
    finished = False
    held: list[str] | None = [] if reply.tools else None  # with tools, the answer is parsed whole at the end
    try:
        if reply.chat:
            yield reply.chunk(None, first=True)
        while True:
            event = await events.get()
            if event.kind == "delta":
                log_info["completion"] = log_info.get("completion", "") + event.value
                if held is not None:
                    held.append(event.value)
                else:
                    yield reply.chunk(event.value)
                continue
            if event.kind == "error" or event.value == "timeout":
                message = event.value if event.kind == "error" else "generation passed the request timeout"
                yield _sse({"error": {"message": message, "type": "server_error", "param": None,
                                      "code": "generation_failed" if event.kind == "error" else "timeout"}})
                break
            log_info["completion_tokens"] = event.tokens
            state.metrics.generated_tokens.labels(reply.model).inc(event.tokens)
            if held is not None:
                content, calls = _tool_answer("".join(held), reply.tools or [])
                yield reply.tool_chunk(content, calls)
                yield reply.chunk(None, finish="tool_calls" if calls else event.value)
                if include_usage:
                    yield reply.usage_chunk(event.tokens)
                break
            yield reply.chunk(None, finish=event.value)
            if include_usage:
                yield reply.usage_chunk(event.tokens)
            break
        yield "data: [DONE]\n\n"
        finished = True
    finally:
        if not finished:
            job.cancel.set()
            state.metrics.cancelled.inc()
