"""The gateway's HTTP service: OpenAI-compatible endpoints, key administration, metrics.

Routes:

- ``POST /v1/chat/completions`` (JSON, or SSE with ``"stream": true``)
- ``POST /v1/embeddings``
- ``GET /v1/models``: the aliases the calling key may use
- ``/admin/keys...``: key administration (:mod:`gateway.admin`, RBAC)
- ``GET /health`` (liveness, no auth), ``GET /ready`` (Postgres and Redis
  reachable), ``GET /metrics`` (Prometheus)

The model routes read the body once, decode it with orjson and hand the dict
to :class:`~gateway.engine.GatewayEngine`; no request model is built, so the
per-request overhead stays in the tens of microseconds. Errors use OpenAI's
shape (``{"error": {"message", "type", "code", "param"}}``) with the status
and headers (``Retry-After``, ``x-ratelimit-*``) OpenAI clients act on.

Callers name the merchant a call serves with ``X-Copilot-Merchant`` (or
``metadata.merchant_id``); ``X-Copilot-User``/``X-Copilot-Session`` (or
``metadata.user_id``/``session_id``) and a W3C ``traceparent`` go to traces.

Run it with ``copilot gateway serve``; uvicorn imports :func:`app_factory`.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, Literal

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import text
from starlette.types import Receive, Scope, Send

from core.config import Settings, get_settings
from core.errors import CopilotError
from gateway.admin import build_admin_router
from gateway.engine import Completion, RequestMeta, StreamStart, new_request_id
from gateway.errors import GatewayError, InvalidRequestError
from gateway.keys import AuthContext
from gateway.providers.base import UpstreamError
from gateway.routing import RoutingConfig
from gateway.runtime import GatewayRuntime

logger = logging.getLogger(__name__)

Header = Callable[[str], str | None]

_JSON: Final = "application/json"
_JSON_BYTES: Final = b"application/json"
_SSE_BYTES: Final = b"text/event-stream; charset=utf-8"
_DONE_FRAME: Final = b"data: [DONE]\n\n"
_WATCH_AFTER_S: Final = 0.02  # streams still running after this get a disconnect watcher
_SSE_HEADERS: Final = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_TYPES_BY_STATUS: Final = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON, headers=headers)


def error_response(exc: BaseException) -> Response:
    """An OpenAI-shaped error response for any failure of a model call."""
    status, body, headers = error_parts(exc)
    return _json(body, status, headers)


def error_parts(exc: BaseException) -> tuple[int, dict[str, Any], dict[str, str] | None]:
    """Status, OpenAI-shaped body and extra headers of an error response."""
    if isinstance(exc, GatewayError):
        return exc.status, exc.to_openai(), exc.headers
    if isinstance(exc, UpstreamError):
        status = exc.status if 400 <= exc.status < 600 else 502
        code = "upstream_timeout" if status == 504 else "upstream_error"
        body = {
            "error": {
                "message": str(exc),
                "type": _TYPES_BY_STATUS.get(status, "api_error"),
                "code": code,
                "param": None,
            }
        }
        extra = {"retry-after": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
        return status, body, extra
    if isinstance(exc, CopilotError):
        body = {
            "error": {
                "message": exc.detail,
                "type": _TYPES_BY_STATUS.get(exc.status, "api_error"),
                "code": exc.code,
                "param": None,
            }
        }
        return exc.status, body, None
    logger.exception("gateway.unexpected_error", exc_info=exc)
    body = {"error": {"message": "Internal error.", "type": "api_error", "code": "internal_error", "param": None}}
    return 500, body, None


def _decode(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequestError(f"The request body is not valid JSON: {exc}") from exc
    if not isinstance(payload, dict):
        raise InvalidRequestError("The request body must be a JSON object.")
    return payload


def _too_large(limit: int) -> GatewayError:
    from gateway.errors import RequestTooLargeError

    return RequestTooLargeError(f"The request body exceeds this gateway's limit of {limit} bytes.")


def _runtime(request: Request) -> GatewayRuntime:
    runtime: GatewayRuntime = request.app.state.runtime
    return runtime


async def _authenticate(request: Request) -> AuthContext:
    return await _runtime(request).authenticator.authenticate_header(request.headers.get("authorization"))


def _request_id(given: str | None) -> uuid.UUID:
    if given:
        try:
            return uuid.UUID(given)
        except ValueError:
            pass
    return new_request_id()


async def _run_model_call(
    runtime: GatewayRuntime, endpoint: Literal["chat", "embeddings"], header: Header, body: bytes
) -> Completion | StreamStart:
    """Run one model call (body already read and size-checked).

    Raises:
        CopilotError: Refused (auth, guards, limits, routing).
        UpstreamError: Every deployment failed.
    """
    auth = await runtime.authenticator.authenticate_header(header("authorization"))
    payload = _decode(body)
    meta = RequestMeta.from_request(payload, header, _request_id(header("x-request-id")))
    if endpoint == "embeddings":
        return await runtime.engine.embeddings(auth, payload, meta)
    if payload.get("stream") is True:
        return await runtime.engine.stream_chat(auth, payload, meta)
    return await runtime.engine.chat(auth, payload, meta)


async def model_call(
    runtime: GatewayRuntime, endpoint: Literal["chat", "embeddings"], header: Header, body: bytes
) -> Response:
    """Run one model call (body already read and size-checked) and build its response."""
    try:
        done = await _run_model_call(runtime, endpoint, header, body)
    except (CopilotError, UpstreamError) as exc:
        return error_response(exc)
    if isinstance(done, StreamStart):
        frames = done.writes or done.frames
        return StreamingResponse(frames, media_type="text/event-stream", headers={**_SSE_HEADERS, **done.headers})
    return Response(done.body, media_type=_JSON, headers=done.headers)


def _raw_headers(
    content_type: bytes, headers: Mapping[str, str] | None, length: int | None
) -> list[tuple[bytes, bytes]]:
    raw = [(b"content-type", content_type)]
    if length is not None:
        raw.append((b"content-length", b"%d" % length))
    if headers:
        raw.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())
    return raw


async def _send_body(send: Send, status: int, body: bytes, headers: Mapping[str, str] | None) -> None:
    await send(
        {"type": "http.response.start", "status": status, "headers": _raw_headers(_JSON_BYTES, headers, len(body))}
    )
    await send({"type": "http.response.body", "body": body})


async def _send_stream(receive: Receive, send: Send, started: StreamStart) -> None:
    """Relay SSE frames; a client that hangs up cancels the relay (as Starlette's StreamingResponse does).

    A watcher waits on ``receive`` for the disconnect, so the upstream is
    closed at once even while it is silent and the stream is accounted as
    cut by the client. It starts only once a stream has run for
    ``_WATCH_AFTER_S`` (a disconnect is reported to it at once then): most
    streams from a fast upstream end before and never pay for a task. The
    stream's own end (``[DONE]``) and the end of the body go out in one
    write; the relay is closed (and accounts) afterwards.
    """
    task = asyncio.current_task()
    assert task is not None
    frames = started.writes or started.frames
    live = True
    disconnected = False
    watcher: asyncio.Future[Any] | None = None

    def on_message(message: asyncio.Future[Any]) -> None:
        nonlocal disconnected
        gone = not message.cancelled() and message.exception() is None and message.result()["type"] == "http.disconnect"
        if live and gone:
            disconnected = True
            task.cancel()

    def watch() -> None:
        nonlocal watcher
        if live:
            watcher = asyncio.ensure_future(receive())
            watcher.add_done_callback(on_message)

    timer = asyncio.get_running_loop().call_later(_WATCH_AFTER_S, watch)
    try:
        try:
            headers = {**_SSE_HEADERS, **started.headers}
            await send(
                {"type": "http.response.start", "status": 200, "headers": _raw_headers(_SSE_BYTES, headers, None)}
            )
            last = b""
            async for frame in frames:
                if frame.endswith(_DONE_FRAME):  # always in the last item: it ends the body in the same write
                    last = frame
                    break
                await send({"type": "http.response.body", "body": frame, "more_body": True})
        finally:
            live = False
            timer.cancel()
            if watcher is not None:
                watcher.remove_done_callback(on_message)
                watcher.cancel()
        await send({"type": "http.response.body", "body": last, "more_body": False})
    except asyncio.CancelledError:
        if not disconnected:
            raise
        task.uncancel()
    finally:
        close = getattr(frames, "aclose", None)
        if close is not None:
            await close()


async def _routed_call(request: Request, endpoint: Literal["chat", "embeddings"]) -> Response:
    runtime = _runtime(request)
    limit = runtime.engine.guards.max_request_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return error_response(_too_large(limit))
    body = await request.body()
    if len(body) > limit:
        return error_response(_too_large(limit))
    return await model_call(runtime, endpoint, request.headers.get, body)


_FAST_PATHS: Final[dict[str, Literal["chat", "embeddings"]]] = {
    "/v1/chat/completions": "chat",
    "/v1/embeddings": "embeddings",
}


class GatewayApp:
    """The ASGI app: the model endpoints straight to the engine, everything else through FastAPI.

    FastAPI's routing, dependency and middleware layers cost a few hundred
    microseconds per request; the two hot endpoints skip them (same handler,
    same errors; FastAPI still documents them and serves them if this
    wrapper is bypassed). Other attributes are the FastAPI app's.
    """

    def __init__(self, api: FastAPI) -> None:
        self.api = api

    def __getattr__(self, name: str) -> Any:
        return getattr(self.api, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _FAST_PATHS.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        runtime: GatewayRuntime | None = getattr(self.api.state, "runtime", None)
        if endpoint is None or runtime is None:
            await self.api(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        limit = runtime.engine.guards.max_request_bytes
        declared = headers.get("content-length")
        response: Response | None = None
        if declared is not None and declared.isdigit() and int(declared) > limit:
            response = error_response(_too_large(limit))
        else:
            chunks: list[bytes] = []
            size = 0
            more = True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    response = error_response(_too_large(limit))
                    break
                chunks.append(chunk)
                more = message.get("more_body", False)
            if response is None:
                try:
                    done = await _run_model_call(runtime, endpoint, headers.get, b"".join(chunks))
                except (CopilotError, UpstreamError) as exc:
                    status, error, extra = error_parts(exc)
                    await _send_body(send, status, orjson.dumps(error), extra)
                    return
                if isinstance(done, StreamStart):
                    await _send_stream(receive, send, done)
                else:
                    await _send_body(send, 200, done.body, done.headers)
                return
        await response(scope, receive, send)


_CHAT_DOC: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {_JSON: {"schema": {"type": "object", "description": "An OpenAI chat completion request."}}},
    }
}
_EMBED_DOC: Final[dict[str, Any]] = {
    "requestBody": {
        "required": True,
        "content": {_JSON: {"schema": {"type": "object", "description": "An OpenAI embeddings request."}}},
    }
}


def _attach(app: FastAPI, runtime: GatewayRuntime, settings: Settings) -> None:
    app.state.runtime = runtime
    app.include_router(build_admin_router(runtime.store, _authenticate, bootstrap_token=settings.gateway.admin_token))


def create_app(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    routing: RoutingConfig | None = None,
    runtime: GatewayRuntime | None = None,
    freeze_gc: bool = False,
) -> GatewayApp:
    """Build the gateway app.

    Args:
        settings: Process settings (default: from the environment).
        database_url: Owner URL of the database (default: configured or embedded).
        redis_url: Redis URL (default: configured or embedded).
        routing: Routing config (default: ``settings.gateway.config_file``).
        runtime: An already started runtime (tests); the app does not close it.
        freeze_gc: Once started, move every object alive (imports, routing,
            pools: they live as long as the process) to the collector's
            permanent generation, so full collections stop walking them
            (the server process; see :func:`app_factory`).
    """
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:  # started and closed by the caller
            yield
            return
        db_url, r_url = database_url, redis_url
        if db_url is None or r_url is None:
            from core.embedded import resolve_services

            urls = await asyncio.to_thread(resolve_services, settings, start=False)
            db_url = db_url or urls.database_url
            r_url = r_url or urls.redis_url
        assert db_url is not None and r_url is not None
        live = await GatewayRuntime.start(settings, database_url=db_url, redis_url=r_url, routing=routing)
        _attach(app, live, settings)
        if freeze_gc:
            gc.collect()
            gc.freeze()
        try:
            yield
        finally:
            await live.aclose()

    app = FastAPI(
        title="Merchant Co-pilot LLM gateway",
        version="1.0",
        description="OpenAI-compatible gateway: virtual keys, RBAC, rate limits, budgets, metering, routing.",
        lifespan=lifespan,
    )
    if runtime is not None:
        _attach(app, runtime, settings)

    @app.post("/v1/chat/completions", tags=["openai"], openapi_extra=_CHAT_DOC, response_model=None)
    async def chat_completions(request: Request) -> Response:
        return await _routed_call(request, "chat")

    @app.post("/v1/embeddings", tags=["openai"], openapi_extra=_EMBED_DOC, response_model=None)
    async def embeddings(request: Request) -> Response:
        return await _routed_call(request, "embeddings")

    @app.get("/v1/models", tags=["openai"], response_model=None)
    async def models(request: Request) -> Response:
        try:
            auth = await _authenticate(request)
            data = _runtime(request).engine.models(auth)
        except CopilotError as exc:
            return error_response(exc)
        return _json({"object": "list", "data": data})

    @app.get("/health", tags=["ops"], response_model=None)
    async def health(request: Request) -> Response:
        return _json(_runtime(request).health())

    @app.get("/ready", tags=["ops"], response_model=None)
    async def ready(request: Request) -> Response:
        live = _runtime(request)
        problems: list[str] = []
        try:
            await asyncio.wait_for(live.redis.ping(), 1.0)
        except Exception as exc:  # readiness reports, it does not raise
            problems.append(f"redis: {type(exc).__name__}")

        def db_ping() -> None:
            with live.db_engine.connect() as conn:
                conn.execute(text("SELECT 1"))

        try:
            await asyncio.wait_for(asyncio.to_thread(db_ping), 2.0)
        except Exception as exc:  # readiness reports, it does not raise
            problems.append(f"postgres: {type(exc).__name__}")
        if problems:
            return _json({"status": "unavailable", "problems": problems}, 503)
        return _json({"status": "ready"})

    @app.get("/metrics", tags=["ops"], response_model=None)
    async def metrics(request: Request) -> Response:
        live = _runtime(request)
        live.metrics.set_usage_pending(live.recorder.pending)
        body, content_type = live.metrics.render(request.headers.get("accept"))
        return Response(body, media_type=content_type)

    return GatewayApp(app)


def app_factory() -> GatewayApp:
    """The app uvicorn serves (``gateway.service:app_factory``, factory mode)."""
    from core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.log_json)
    return create_app(settings, freeze_gc=True)
