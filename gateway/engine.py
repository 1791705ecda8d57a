"""The request path every model call takes, in the HTTP service and in process.

For each call, in order:

1. **Guards** (:mod:`gateway.guards`): shape, allowed parameters, caps.
2. **Authorization** (:func:`gateway.keys.authorize`): role, endpoint, model
   and merchant scopes of the caller's key.
3. **Cache** (opt-in per key): an exact-match hit is answered from Redis; it
   still counts as a request for requests/min, costs nothing and is metered.
4. **Admission** (:class:`gateway.ratelimit.RateLimiter`): one atomic Redis
   script checks every window and budget and reserves the estimated tokens and
   cost; an exhausted budget stops the call here, before any provider is paid.
5. **Routing** (:class:`gateway.router.Router`): deployment choice, retries,
   fallbacks, circuit breakers, timeouts.
6. **Settlement, metering, tracing, metrics**, off the request path: the
   reservation's settlement is queued for Redis (it leaves with the next
   admission's write, see :meth:`~gateway.ratelimit.RateLimiter.settle_nowait`), the
   usage record is queued for the batch writer, the generation for the
   tracer. Streams do this when they end, however they end (finished, cut by
   the client, broken upstream), with usage counted from the frames seen when
   the upstream's final usage chunk never came.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, Final, Literal

import orjson

from gateway import pricing
from gateway.cache import ResponseCache, completion_as_sse
from gateway.errors import GatewayError, InvalidRequestError, ModelModeError, RateLimitExceededError
from gateway.guards import Guards, check_chat, check_embeddings
from gateway.keys import AuthContext, allowed_models, authorize
from gateway.metering import UsageEvent, UsageRecorder
from gateway.metrics import GatewayMetrics
from gateway.providers.base import Deployment, LastFrames, TokenUsage, UpstreamError
from gateway.ratelimit import RateLimiter, Reservation, headers
from gateway.router import Router
from gateway.tracing import GenerationRecord, Tracer
from gateway.tracing_process import ProcessTracer
from gateway.wire import LazyCompletionText, frame_text

logger = logging.getLogger(__name__)

Endpoint = Literal["chat", "embeddings"]
_DONE_FRAME: Final = b"data: [DONE]\n\n"
_USAGE_MARK: Final = b'"usage":{'


def new_request_id() -> uuid.UUID:
    """A random (version 4) request id from the process PRNG: unique, cheap, not a secret."""
    return uuid.UUID(int=random.getrandbits(128), version=4)


@dataclass(slots=True)
class RequestMeta:
    """Who a call serves and how it is traced (from headers or ``metadata``).

    Attributes:
        request_id: Unique per request; the usage record's idempotency key.
        merchant_id: The merchant served (limits and costs per merchant).
        user_id: End user, for traces.
        session_id: Conversation/session, for traces.
        trace_name: Name of the trace, when the caller starts one.
        tags: Trace tags.
        traceparent: W3C trace context of the caller, so the generation nests
            under the caller's trace.
    """

    request_id: uuid.UUID = field(default_factory=new_request_id)
    merchant_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    trace_name: str | None = None
    tags: tuple[str, ...] = ()
    traceparent: str | None = None
    finished: bool = False
    started_ns: int = field(default_factory=time.time_ns)

    @classmethod
    def from_request(
        cls, payload: Mapping[str, Any], header: Callable[[str], str | None], request_id: uuid.UUID | None = None
    ) -> RequestMeta:
        """Read the call's context from ``X-Copilot-*`` headers, else ``metadata``/``user`` in the body."""
        metadata = payload.get("metadata")
        meta: Mapping[str, Any] = metadata if isinstance(metadata, dict) else {}

        def pick(header_name: str, key: str) -> str | None:
            value = header(header_name) or meta.get(key)
            if value is None:
                return None
            text = str(value).strip()
            return text[:128] or None

        tags = meta.get("tags")
        return cls(
            request_id=request_id or new_request_id(),
            merchant_id=pick("x-copilot-merchant", "merchant_id"),
            user_id=pick("x-copilot-user", "user_id") or (str(payload["user"])[:128] if payload.get("user") else None),
            session_id=pick("x-copilot-session", "session_id"),
            trace_name=pick("x-copilot-trace-name", "trace_name"),
            tags=tuple(str(t)[:64] for t in tags[:20]) if isinstance(tags, list) else (),
            traceparent=header("traceparent"),
        )


@dataclass(slots=True)
class Completion:
    """A finished call: the body to return and the headers that go with it."""

    body: bytes
    headers: dict[str, str]
    deployment: str | None
    cache_hit: bool = False


@dataclass(slots=True)
class StreamStart:
    """A started stream: headers to send now, then the SSE frames.

    Attributes:
        headers: Response headers.
        frames: One SSE frame per item (in-process consumers parse each).
        deployment: The deployment serving it (None for a cache hit).
        writes: The same stream in the pieces it arrived in: each item holds
            one or more whole frames, so an HTTP relay writes each at once
            (None: use ``frames``). Iterate ``writes`` or ``frames``, not both.
    """

    headers: dict[str, str]
    frames: AsyncIterator[bytes]
    deployment: str | None
    writes: AsyncIterator[bytes] | None = None


def _without_metadata(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != "metadata"}


def _error_frame(exc: UpstreamError) -> bytes:
    body = {"error": {"message": str(exc), "type": "api_error", "code": "upstream_error", "param": None}}
    return b"data: " + orjson.dumps(body) + b"\n\n"


class GatewayEngine:
    """Runs calls through guards, auth, cache, limits, routing, metering and tracing.

    Args:
        router: Picks and calls deployments.
        limiter: Rate limits and budgets (None: unlimited, e.g. some tests).
        cache: Exact-match response cache (used for keys that opt in).
        recorder: Usage records for billing.
        tracer: Langfuse generations.
        metrics: Prometheus metrics.
        guards: Request caps.
    """

    def __init__(
        self,
        router: Router,
        *,
        limiter: RateLimiter | None = None,
        cache: ResponseCache | None = None,
        recorder: UsageRecorder | None = None,
        tracer: Tracer | ProcessTracer | None = None,
        metrics: GatewayMetrics | None = None,
        guards: Guards | None = None,
    ) -> None:
        self.router = router
        self.limiter = limiter
        self.cache = cache
        self.recorder = recorder
        self.tracer = tracer if tracer is not None and tracer.enabled else None
        self.metrics = metrics
        self.guards = guards or Guards()
        self._tasks: set[asyncio.Task[Any]] = set()

    # ----------------------------------------------------------------- helpers

    def _background(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for background settlements, cache writes and bookkeeping (shutdown, tests)."""
        await asyncio.sleep(0)  # bookkeeping scheduled with call_soon runs first
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self.limiter is not None:
            await self.limiter.flush_settlements()

    def _deployments(self, alias: str, mode: str) -> list[Deployment]:
        group = self.router.group(alias)
        if group.mode != mode:
            endpoint = "chat completions" if mode == "chat" else "embeddings"
            raise ModelModeError(f"The model '{alias}' is not available for {endpoint}.", param="model")
        return list(group.deployments)

    async def _admit(
        self, auth: AuthContext, meta: RequestMeta, tokens: int, cost: int
    ) -> tuple[Reservation | None, dict[str, str]]:
        if self.limiter is None:
            return None, {"x-request-id": str(meta.request_id)}
        reservation = await self.limiter.admit(auth, meta.merchant_id, tokens, cost)
        out = headers(reservation.result)
        out["x-request-id"] = str(meta.request_id)
        return reservation, out

    def _begin(self, endpoint: Endpoint) -> None:
        if self.metrics is not None:
            self.metrics.request_started(endpoint)

    def _settle(self, reservation: Reservation | None, tokens: int, cost: int) -> None:
        if reservation is not None and self.limiter is not None:
            # Queued, not awaited: it leaves with the next admission's write (see RateLimiter).
            self.limiter.settle_nowait(reservation, tokens, cost)

    def _finish(
        self,
        *,
        endpoint: Endpoint,
        auth: AuthContext,
        meta: RequestMeta,
        alias: str,
        deployment: Deployment | None,
        usage: TokenUsage,
        cost: int,
        started_ns: int,
        status: str,
        stream: bool,
        cache_hit: bool = False,
        error: str | None = None,
        payload: Mapping[str, Any] | None = None,
        output: Any = None,
        first_token_ns: int | None = None,
        http_status: int = 200,
    ) -> None:
        """Meter, trace and count one finished call (never raises).

        The call is marked finished now; the bookkeeping runs at the loop's
        next turn, so a response is written before its usage record, trace
        and metrics are built (it is all in memory either way).
        """
        if meta.finished:
            return
        meta.finished = True
        ended_ns = time.time_ns()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a synchronous caller): account now
            loop = None
        book = partial(
            self._account,
            endpoint=endpoint,
            auth=auth,
            meta=meta,
            alias=alias,
            deployment=deployment,
            usage=usage,
            cost=cost,
            started_ns=started_ns,
            ended_ns=ended_ns,
            status=status,
            stream=stream,
            cache_hit=cache_hit,
            error=error,
            payload=payload,
            output=output,
            first_token_ns=first_token_ns,
            http_status=http_status,
        )
        if loop is None:
            book()
        else:
            loop.call_soon(book)

    def _account(
        self,
        *,
        endpoint: Endpoint,
        auth: AuthContext,
        meta: RequestMeta,
        alias: str,
        deployment: Deployment | None,
        usage: TokenUsage,
        cost: int,
        started_ns: int,
        ended_ns: int,
        status: str,
        stream: bool,
        cache_hit: bool,
        error: str | None,
        payload: Mapping[str, Any] | None,
        output: Any,
        first_token_ns: int | None,
        http_status: int,
    ) -> None:
        latency_ms = (ended_ns - started_ns) // 1_000_000
        try:
            if self.recorder is not None:
                self.recorder.record(
                    UsageEvent(
                        request_id=meta.request_id,
                        key_id=auth.key_id,
                        tenant_id=auth.tenant_id,
                        merchant_id=meta.merchant_id,
                        endpoint=endpoint,
                        model=alias,
                        deployment=deployment.name if deployment else None,
                        prompt_tokens=usage.prompt_tokens,
                        completion_tokens=usage.completion_tokens,
                        cost_micros_usd=cost,
                        latency_ms=latency_ms,
                        status=status,
                        cache_hit=cache_hit,
                        stream=stream,
                        error=error[:500] if error else None,
                        created_at=datetime.fromtimestamp(started_ns / 1e9, UTC),
                    )
                )
            if self.tracer is not None:
                self.tracer.record(
                    GenerationRecord(
                        name=endpoint,
                        model=alias,
                        deployment=deployment.name if deployment else None,
                        provider_model=deployment.model if deployment else None,
                        input=(payload or {}).get("messages" if endpoint == "chat" else "input"),
                        output=output,
                        prompt_tokens=usage.prompt_tokens,
                        completion_tokens=usage.completion_tokens,
                        cost_usd=cost / 1_000_000,
                        start_ns=started_ns,
                        end_ns=ended_ns,
                        status="ok" if status == "ok" else "error",
                        error=error,
                        key_id=str(auth.key_id),
                        tenant_id=auth.tenant_id,
                        merchant_id=meta.merchant_id,
                        user_id=meta.user_id,
                        session_id=meta.session_id,
                        trace_name=meta.trace_name,
                        tags=list(meta.tags),
                        stream=stream,
                        cache_hit=cache_hit,
                        ttft_ns=first_token_ns - started_ns if first_token_ns else None,
                        request_id=str(meta.request_id),
                        traceparent=meta.traceparent,
                    )
                )
            if self.metrics is not None:
                m = self.metrics
                m.request_finished(endpoint, alias, http_status, (ended_ns - started_ns) / 1e9)
                m.add_usage(
                    alias,
                    prompt_tokens=usage.prompt_tokens,
                    completion_tokens=usage.completion_tokens,
                    cost_usd=cost / 1_000_000,
                    tenant=auth.tenant_id,
                )
                if first_token_ns:
                    m.observe_ttft(alias, (first_token_ns - started_ns) / 1e9)
        except Exception:  # bookkeeping must never fail a call
            logger.exception("gateway.finish_failed", extra={"request_id": str(meta.request_id)})

    def _failed(
        self, endpoint: Endpoint, auth: AuthContext, meta: RequestMeta, payload: Mapping[str, Any], exc: BaseException
    ) -> None:
        """Account for a call that failed before it could finish normally."""
        if meta.finished:
            return
        if isinstance(exc, RateLimitExceededError) and self.metrics is not None:
            self.metrics.rate_limit_refused(exc.limit)
        if isinstance(exc, GatewayError | UpstreamError):
            status = exc.code if isinstance(exc, GatewayError) else "upstream_error"
            http_status = exc.status
        else:
            status, http_status = "error", 500
        model = payload.get("model") if isinstance(payload, Mapping) else None
        self._finish(
            endpoint=endpoint,
            auth=auth,
            meta=meta,
            alias=str(model)[:128] if model else "",
            deployment=None,
            usage=TokenUsage(),
            cost=0,
            started_ns=meta.started_ns,
            status=str(status)[:32],
            stream=bool(payload.get("stream")) if isinstance(payload, Mapping) else False,
            error=str(exc),
            payload=payload,
            http_status=http_status,
        )

    def _estimate(self, deployments: list[Deployment], payload: Mapping[str, Any], completion: int) -> tuple[int, int]:
        prompt = pricing.estimate_prompt_tokens(payload)
        cost = max((pricing.estimate_cost_micros(d, prompt, completion) for d in deployments), default=0)
        return prompt + completion, cost

    # ----------------------------------------------------------------- chat

    async def chat(self, auth: AuthContext, payload: dict[str, Any], meta: RequestMeta) -> Completion:
        """A non-streamed chat completion.

        Raises:
            GatewayError: Guards, authorization, limits or an unknown model.
            UpstreamError: Every deployment and fallback failed.
        """
        self._begin("chat")
        try:
            return await self._chat(auth, payload, meta)
        except BaseException as exc:
            self._failed("chat", auth, meta, payload, exc)
            raise

    async def _chat(self, auth: AuthContext, payload: dict[str, Any], meta: RequestMeta) -> Completion:
        """A non-streamed chat completion.

        Raises:
            GatewayError: Guards, authorization, limits or an unknown model.
            UpstreamError: Every deployment and fallback failed.
        """
        shape = check_chat(payload, self.guards)
        if shape.stream:
            raise InvalidRequestError("Use stream_chat for 'stream': true.", param="stream")
        authorize(auth, "chat", shape.model, meta.merchant_id)
        deployments = self._deployments(shape.model, "chat")
        completion = shape.max_completion_tokens * shape.choices
        return await self._complete("chat", auth, meta, shape.model, payload, deployments, completion)

    async def _complete(
        self,
        endpoint: Endpoint,
        auth: AuthContext,
        meta: RequestMeta,
        alias: str,
        payload: dict[str, Any],
        deployments: list[Deployment],
        completion_tokens: int,
    ) -> Completion:
        """The non-streamed path shared by chat and embeddings: cache, admit, route, settle, account."""
        cache_key: str | None = None
        if self.cache is not None and auth.cache_enabled:
            cache_key = self.cache.key_for(auth.tenant_id, meta.merchant_id, endpoint, payload)
            cached = await self.cache.get(cache_key)
            if cached is not None:
                return await self._cached(endpoint, auth, meta, alias, payload, cached, meta.started_ns)
        tokens, cost_estimate = self._estimate(deployments, payload, completion_tokens)
        reservation, out_headers = await self._admit(auth, meta, tokens, cost_estimate)
        call = self.router.chat if endpoint == "chat" else self.router.embeddings
        try:
            deployment, result = await call(alias, _without_metadata(payload))
        except BaseException:
            self._settle(reservation, 0, 0)
            raise
        cost = pricing.cost_micros(deployment, result.usage)
        if reservation is not None:
            # Queued for Redis after the response is written (it waits for a write to share anyway).
            asyncio.get_running_loop().call_soon(self._settle, reservation, result.usage.total_tokens, cost)
        if cache_key is not None and self.cache is not None:
            self._background(self.cache.set(cache_key, result.body))
        self._finish(
            endpoint=endpoint,
            auth=auth,
            meta=meta,
            alias=alias,
            deployment=deployment,
            usage=result.usage,
            cost=cost,
            started_ns=meta.started_ns,
            status="ok",
            stream=False,
            payload=payload,
            output=LazyCompletionText(result.body) if endpoint == "chat" else None,
        )
        out_headers["x-copilot-deployment"] = deployment.name
        return Completion(result.body, out_headers, deployment.name)

    async def _cached(
        self,
        endpoint: Endpoint,
        auth: AuthContext,
        meta: RequestMeta,
        alias: str,
        payload: Mapping[str, Any],
        cached: bytes,
        started_ns: int,
    ) -> Completion:
        reservation, out_headers = await self._admit(auth, meta, 0, 0)
        self._settle(reservation, 0, 0)
        self._finish(
            endpoint=endpoint,
            auth=auth,
            meta=meta,
            alias=alias,
            deployment=None,
            usage=TokenUsage(),
            cost=0,
            started_ns=started_ns,
            status="ok",
            stream=bool(payload.get("stream")),
            cache_hit=True,
            payload=payload,
            output=LazyCompletionText(cached) if endpoint == "chat" else None,
        )
        out_headers["x-copilot-cache"] = "hit"
        return Completion(cached, out_headers, None, cache_hit=True)

    async def stream_chat(self, auth: AuthContext, payload: dict[str, Any], meta: RequestMeta) -> StreamStart:
        """Start a streamed chat completion.

        Everything that can refuse the call (guards, auth, limits, every
        deployment failing before its first frame) raises here, before any
        byte is sent; afterwards failures become an ``error`` frame.
        """
        self._begin("chat")
        try:
            return await self._stream_chat(auth, payload, meta)
        except BaseException as exc:
            self._failed("chat", auth, meta, payload, exc)
            raise

    async def _stream_chat(self, auth: AuthContext, payload: dict[str, Any], meta: RequestMeta) -> StreamStart:
        """Start a streamed chat completion.

        Everything that can refuse the call (guards, auth, limits, every
        deployment failing before its first frame) raises here, before any
        byte is sent; afterwards failures become an ``error`` frame.
        """
        started_ns = meta.started_ns
        shape = check_chat(payload, self.guards)
        authorize(auth, "chat", shape.model, meta.merchant_id)
        deployments = self._deployments(shape.model, "chat")
        cache_key: str | None = None
        if self.cache is not None and auth.cache_enabled:
            cache_key = self.cache.key_for(auth.tenant_id, meta.merchant_id, "chat", payload)
            cached = await self.cache.get(cache_key)
            if cached is not None:
                done = await self._cached("chat", auth, meta, shape.model, payload, cached, started_ns)
                options = payload.get("stream_options")
                include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
                return StreamStart(done.headers, _replay(completion_as_sse(cached, include_usage=include_usage)), None)
        tokens, cost_estimate = self._estimate(deployments, payload, shape.max_completion_tokens * shape.choices)
        reservation, out_headers = await self._admit(auth, meta, tokens, cost_estimate)
        try:
            deployment, frames = await self.router.stream_chat(shape.model, _without_metadata(payload))
        except BaseException:
            self._settle(reservation, 0, 0)
            raise
        options = payload.get("stream_options")
        wants_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        out_headers["x-copilot-deployment"] = deployment.name
        relay = self._relay(
            frames, auth, meta, shape.model, deployment, payload, reservation, started_ns, wants_usage, cache_key
        )
        return StreamStart(out_headers, _one_per_item(relay), deployment.name, writes=relay)

    async def _relay(
        self,
        frames: AsyncIterator[bytes],
        auth: AuthContext,
        meta: RequestMeta,
        alias: str,
        deployment: Deployment,
        payload: Mapping[str, Any],
        reservation: Reservation | None,
        started_ns: int,
        wants_usage: bool,
        cache_key: str | None,
    ) -> AsyncGenerator[bytes, None]:
        usage: TokenUsage | None = None
        seen: list[bytes] = []
        status = "client_closed"
        error: str | None = None
        first_ns: int | None = None
        try:
            try:
                async for piece in frames:
                    if first_ns is None:
                        first_ns = time.time_ns()
                    if piece.find(b"\n\n") == len(piece) - 2:
                        events: list[bytes] | tuple[bytes] = (piece,)  # one frame: the usual case
                    else:
                        events = [event + b"\n\n" for event in piece.split(b"\n\n") if event]
                    kept: list[bytes] | None = None  # set once a frame is left out
                    for i, event in enumerate(events):
                        if _USAGE_MARK in event:
                            data = orjson.loads(event[5:])
                            reported = data.get("usage")
                            if reported:
                                usage = TokenUsage(
                                    int(reported.get("prompt_tokens") or 0), int(reported.get("completion_tokens") or 0)
                                )
                                if not data.get("choices") and not wants_usage:
                                    # the usage-only chunk we asked for on the caller's behalf
                                    kept = list(events[:i]) if kept is None else kept
                                    continue
                        else:
                            seen.append(event)
                        if kept is not None:
                            kept.append(event)
                    last = isinstance(piece, LastFrames)
                    if kept is not None:
                        piece = b"".join(kept)
                    if last:  # the upstream said this is the end: [DONE] goes in the same item
                        status = "ok"
                        yield piece + _DONE_FRAME
                        return
                    if piece:
                        yield piece
            except UpstreamError as exc:
                status, error = "upstream_error", str(exc)
                yield _error_frame(exc)
                return
            status = "ok"
            yield _DONE_FRAME
        finally:
            close = getattr(frames, "aclose", None)
            if close is not None:
                try:
                    await close()
                except Exception:  # the upstream is gone anyway
                    logger.debug("gateway.stream_close_failed", exc_info=True)
            if usage is None:
                text = "".join(frame_text(f) for f in seen)
                usage = TokenUsage(
                    pricing.estimate_prompt_tokens(payload), pricing.count_tokens(text, deployment.model)
                )
            cost = pricing.cost_micros(deployment, usage)
            # Not awaited here: the generator may be closing because its task was cancelled.
            self._settle(reservation, usage.total_tokens, cost)
            self._finish(
                endpoint="chat",
                auth=auth,
                meta=meta,
                alias=alias,
                deployment=deployment,
                usage=usage,
                cost=cost,
                started_ns=started_ns,
                status=status,
                stream=True,
                error=error,
                payload=payload,
                output=LazyCompletionText(seen),
                first_token_ns=first_ns,
            )
            if status == "ok" and cache_key is not None and self.cache is not None:
                body = _assemble(seen, alias, usage)
                self._background(self.cache.set(cache_key, body))

    # ----------------------------------------------------------------- embeddings

    async def embeddings(self, auth: AuthContext, payload: dict[str, Any], meta: RequestMeta) -> Completion:
        """An embeddings call."""
        self._begin("embeddings")
        try:
            return await self._embeddings(auth, payload, meta)
        except BaseException as exc:
            self._failed("embeddings", auth, meta, payload, exc)
            raise

    async def _embeddings(self, auth: AuthContext, payload: dict[str, Any], meta: RequestMeta) -> Completion:
        """An embeddings call."""
        alias, _count = check_embeddings(payload)
        authorize(auth, "embeddings", alias, meta.merchant_id)
        deployments = self._deployments(alias, "embedding")
        return await self._complete("embeddings", auth, meta, alias, payload, deployments, 0)

    # ----------------------------------------------------------------- models

    def models(self, auth: AuthContext) -> list[dict[str, Any]]:
        """The aliases this key may call, in OpenAI's ``/v1/models`` shape."""
        authorize(auth, "models")
        return [
            {"id": alias, "object": "model", "created": 0, "owned_by": "merchant-copilot"}
            for alias in allowed_models(auth, self.router.aliases())
        ]


async def _one_per_item(pieces: AsyncGenerator[bytes, None]) -> AsyncIterator[bytes]:
    """One frame per item from pieces holding one or more frames each."""
    try:
        async for piece in pieces:
            if piece.find(b"\n\n") == len(piece) - 2:
                yield piece
            else:
                for event in piece.split(b"\n\n"):
                    if event:
                        yield event + b"\n\n"
    finally:
        await pieces.aclose()


async def _replay(frames: list[bytes]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame
    yield _DONE_FRAME


def _assemble(frames: list[bytes], alias: str, usage: TokenUsage) -> bytes:
    """A chat.completion body from the streamed frames (for the cache)."""
    content: list[str] = []
    tool_calls: dict[int, dict[str, Any]] = {}
    finish: str | None = None
    ident = ""
    for frame in frames:
        try:
            data = orjson.loads(frame[5:])
        except orjson.JSONDecodeError:
            continue
        ident = data.get("id") or ident
        for choice in data.get("choices") or ():
            delta = choice.get("delta") or {}
            if delta.get("content"):
                content.append(delta["content"])
            for call in delta.get("tool_calls") or ():
                slot = tool_calls.setdefault(
                    int(call.get("index") or 0),
                    {"id": call.get("id"), "type": "function", "function": {"name": "", "arguments": ""}},
                )
                function = call.get("function") or {}
                slot["id"] = slot["id"] or call.get("id")
                slot["function"]["name"] += function.get("name") or ""
                slot["function"]["arguments"] += function.get("arguments") or ""
            finish = choice.get("finish_reason") or finish
    message: dict[str, Any] = {"role": "assistant", "content": "".join(content) or None}
    if tool_calls:
        message["tool_calls"] = [tool_calls[i] for i in sorted(tool_calls)]
    return orjson.dumps(
        {
            "id": ident or f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": alias,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            },
        }
    )
