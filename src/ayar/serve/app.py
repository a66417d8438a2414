"""The OpenAI-compatible HTTP API: chat and text completions (streamed or not), models, probes, metrics, feedback."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from ayar.data.reasoning import prompt_opens_reasoning
from ayar.recipe import ServeConfig
from ayar.serve.engine import Engine, Job, QueuedEngine, QueueFullError, SamplingParams
from ayar.serve.feedback import add_feedback_route
from ayar.serve.logging_db import RequestLog, latest_drift
from ayar.serve.metrics import ServerMetrics
from ayar.serve.middleware import Gate
from ayar.serve.reasoning import template_thinks
from ayar.serve.replies import Answer, Reply, stream
from ayar.serve.schemas import MAX_SEED, ChatCompletionRequest, CompletionRequest, error_response

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
    tool_call_grammar: bool = _DEFAULTS.tool_call_grammar

    @classmethod
    def from_config(cls, cfg: ServeConfig, api_keys: list[str] | None = None,
                    default_log_db: Path | None = None) -> ServeSettings:
        """Settings from a recipe's serve section; the log goes to ``default_log_db`` when none is named."""
        return cls(api_keys=api_keys or [], max_body_bytes=cfg.max_body_bytes, request_timeout=cfg.request_timeout,
                   default_max_tokens=cfg.default_max_tokens, log_db=cfg.log_db or default_log_db,
                   log_requests=cfg.log_requests or cfg.log_text, log_text=cfg.log_text,
                   tool_call_grammar=cfg.tool_call_grammar)


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
        _refuse_unhonoured(engine, body)
        messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                    for m in body.messages]
        tools = body.tool_list()
        ids = _encode_chat(engine, body, messages, tools)
        user_text = "\n".join(m["content"] for m in messages if m["role"] == "user")
        constraint = await _constraint(engine, body, request.app.state.settings.tool_call_grammar)
        options = {"logprobs": body.top_count(), "constraint": constraint}
        return await _complete(request, engine, body, [Prompt(ids, user_text)], chat=True,
                               max_tokens=body.max_completion_tokens or body.max_tokens, tools=tools,
                               options=options)

    @app.post("/v1/completions", summary="Text completion (OpenAI format; stream: true for SSE).")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        engine = _engine(request)
        _check_model(engine, body.model)
        _refuse_unhonoured(engine, body)
        prompts = [_completion_prompt(engine, p) for p in body.prompt_list()]
        options = {"logprobs": body.logprobs, "score_prompt": body.echo}
        return await _complete(request, engine, body, prompts, chat=False, max_tokens=body.max_tokens,
                               options=options, echo=body.echo)


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


class Prompt(NamedTuple):
    """One prompt of a request: its token ids and its text (what the request log keeps, what echo answers)."""

    ids: list[int]
    text: str


def _completion_prompt(engine: QueuedEngine, prompt: str | list[int]) -> Prompt:
    """A completions prompt given as text or as token ids (as evaluation harnesses send them)."""
    if isinstance(prompt, str):
        return Prompt(engine.encode_text(prompt), prompt)
    vocabulary = len(engine.tokenizer)
    outside = next((token for token in prompt if not 0 <= token < vocabulary), None)
    if outside is not None:
        raise ApiError(400, f"token id {outside} is outside the vocabulary of {vocabulary} tokens (0 to "
                       f"{vocabulary - 1})", "prompt", "invalid_token_id")
    return Prompt(list(prompt), engine.tokenizer.decode(prompt))


def _refuse_unhonoured(engine: QueuedEngine, body: ChatCompletionRequest | CompletionRequest) -> None:
    """A 400 naming the first field the request sets that the engine does not carry out: never a silent drop."""
    for name in body.asked_features():
        if name not in engine.honours:
            where = ("serve with --engine transformers for it" if name in Engine.honours
                     else "no ayar engine carries it out yet")
            raise ApiError(400, f"{name} is not supported by the {engine.kind} engine ({where})", name,
                           "unsupported_field")


async def _constraint(engine: QueuedEngine, body: ChatCompletionRequest, hold_chosen_calls: bool) -> Any:
    """The compiled grammar of a forced tool call, of the calls the model may choose to make
    (``hold_chosen_calls`` or ``parallel_tool_calls: false``, on an engine that holds calls), or of the
    request's response_format; None for free text."""
    schema = body.response_format.schema_of_answer() if body.response_format else None
    forced, offered = body.forced_tools(), body.tool_list()
    if forced and schema is not None:
        raise ApiError(400, "a forced tool call (tool_choice) and a response_format cannot both shape one answer",
                       "tool_choice", "unsupported_field")
    chosen = (offered and not forced and "tool_choice" in engine.honours
              and (hold_chosen_calls or body.parallel_tool_calls is False))
    if forced:
        param, compile_grammar = "tool_choice", functools.partial(engine.compile_call, forced)
    elif chosen:
        param = "tools"
        compile_grammar = functools.partial(engine.compile_chosen_call, offered, body.parallel_tool_calls is not False,
                                            schema)
    elif schema is not None:
        param, compile_grammar = "response_format", functools.partial(engine.compile_constraint, schema)
    else:
        return None
    try:
        return await asyncio.to_thread(compile_grammar)
    except ValueError as exc:
        raise ApiError(400, str(exc), param, "invalid_schema") from None


def _start(engine: QueuedEngine, body: Any, ids: list[int], params: SamplingParams,
           timeout: float) -> tuple[Job, asyncio.Queue]:
    """Queue one job; its events arrive on the returned queue."""
    loop, events = asyncio.get_running_loop(), asyncio.Queue()
    job = Job(body.model, ids, params, time.monotonic() + timeout,
              emit=lambda event: loop.call_soon_threadsafe(events.put_nowait, event))
    try:
        engine.submit(job)
    except QueueFullError as exc:
        raise ApiError(429, str(exc), code="queue_full", headers={"Retry-After": str(exc.retry_after)}) from None
    return job, events


async def _answer(events: asyncio.Queue | None, prompt: Prompt, echo: bool) -> Answer:
    """One job's whole answer (no job at all: nothing to generate or score)."""
    text = ""
    while events is not None:
        event = await events.get()
        if event.kind == "delta":
            text += event.value
        elif event.kind == "error":
            raise ApiError(500, event.value, code="generation_failed")
        else:
            return Answer(text, event.value, event.tokens, event.logprobs, prompt.text, echo)
    return Answer("", "length", 0, None, prompt.text, echo)


def _sampling(body: Any, budget: int, choice: int, options: dict[str, Any]) -> SamplingParams:
    """Choice ``choice``'s settings: with a seed, choice i samples with seed + i (n different, repeatable)."""
    seed = None if body.seed is None else (body.seed + choice) % (MAX_SEED + 1)
    top_k = 0 if body.top_k == -1 else body.top_k  # vLLM's -1 and OpenAI-style 0 both mean no cut
    return SamplingParams(budget, body.temperature, body.top_p, body.stop_list(), seed, body.min_tokens, top_k,
                          body.repetition_penalty, **options)


def _start_all(engine: QueuedEngine, body: Any, prompts: list[Prompt], budgets: list[int],
               options: dict[str, Any], timeout: float) -> list[tuple[Job, asyncio.Queue] | None]:
    """n jobs per prompt, in choice order (None where there is nothing to generate or score); when the queue
    fills half-way, the jobs already queued are cancelled with the 429."""
    runs: list[tuple[Job, asyncio.Queue] | None] = []
    try:
        for prompt, budget in zip(prompts, budgets, strict=True):
            for choice in range(body.n):
                params = _sampling(body, budget, choice, options)
                wanted = budget > 0 or params.logprobs is not None
                runs.append(_start(engine, body, prompt.ids, params, timeout) if wanted else None)
    except ApiError:
        for run in runs:
            if run:
                run[0].cancel.set()
        raise
    return runs


async def _complete(request: Request, engine: QueuedEngine, body: Any, prompts: list[Prompt], chat: bool,
                    max_tokens: int | None, tools: list[dict[str, Any]] | None = None,
                    options: dict[str, Any] | None = None, echo: bool = False) -> Response:
    """Queue the jobs (n per prompt) and answer in one piece, or one choice as server-sent events."""
    state, settings, options = request.app.state, request.app.state.settings, options or {}
    bos = engine.tokenizer.bos_token_id
    # an empty prompt: start from the beginning-of-text token
    prompts = [p if p.ids else Prompt([bos if bos is not None else engine.tokenizer.eos_token_id], p.text)
               for p in prompts]
    budgets = [_token_budget(engine, len(p.ids), max_tokens, settings.default_max_tokens) for p in prompts]
    prompt_tokens = sum(len(p.ids) for p in prompts) * body.n
    if body.stream and (len(prompts) * body.n > 1 or options.get("logprobs") is not None or echo
                        or budgets[0] == 0):
        raise ApiError(400, "stream answers one generated choice without logprobs or echo; send stream: false "
                       "for n > 1, several prompts, logprobs, echo or max_tokens 0", "stream", "unsupported_field")
    log_info = {"model": body.model, "prompt_tokens": prompt_tokens, "skip": not body.log,
                "prompt": "\n".join(p.text for p in prompts)}  # RequestLog keeps only its length unless text logging is on
    request.scope["state"]["ayar_log"] = log_info
    runs = _start_all(engine, body, prompts, budgets, options, settings.request_timeout)
    state.metrics.prompt_tokens.labels(body.model).inc(prompt_tokens)
    reply = Reply(body.model, chat, prompt_tokens, engine.tokenizer)
    log_info["completion_id"] = reply.id  # what /v1/feedback names the answer by
    reply.tools = tools
    if chat and template_thinks(engine.tokenizer.chat_template):
        # the last prompt tokens say whether the generation prompt opened the think block itself
        reply.reasoning_opened = prompt_opens_reasoning(engine.tokenizer.decode(prompts[0].ids[-8:]))
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        job, events = runs[0]  # type: ignore[misc]  # a streamed prompt always has room to generate
        return StreamingResponse(stream(job, events, reply, include_usage, state, log_info),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    answers = await asyncio.gather(*(_answer(run[1] if run else None, prompts[i // body.n], echo)
                                     for i, run in enumerate(runs)))
    completion_tokens = sum(a.tokens for a in answers)
    log_info["completion_tokens"], log_info["completion"] = completion_tokens, answers[0].text
    state.metrics.generated_tokens.labels(body.model).inc(completion_tokens)
    if any(a.finish == "timeout" for a in answers):
        raise ApiError(504, f"generation took longer than the request timeout of {settings.request_timeout:g} s",
                       code="timeout")
    return JSONResponse(reply.full(answers))
