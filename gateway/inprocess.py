"""The gateway as a library: the :class:`~gateway.types.LLMGateway` protocol in process.

:class:`Gateway` runs calls through the same :class:`~gateway.engine.GatewayEngine`
as the HTTP service (guards, scopes, limits, budgets, routing, metering,
tracing), minus the HTTP hop. It acts as one key: the key given by
``settings.gateway.api_key`` when set (so limits and costs land on it), else
an internal platform identity with no limits, tenant ``internal``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from core.config import Settings
from gateway.engine import GatewayEngine, RequestMeta
from gateway.keys import AuthContext, KeyLimits, Role, Scopes
from gateway.routing import RoutingConfig
from gateway.runtime import GatewayRuntime
from gateway.types import CallContext, ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse
from gateway.wire import chat_payload, embedding_payload, parse_chat, parse_chunk, parse_embeddings

INTERNAL_TENANT = "internal"
_INTERNAL_KEY_ID = uuid.UUID("00000000-0000-0000-0000-00000000c0de")


def internal_context(tenant_id: str = INTERNAL_TENANT) -> AuthContext:
    """The identity of in-process calls made without a key."""
    return AuthContext(
        key_id=_INTERNAL_KEY_ID,
        lineage_id=_INTERNAL_KEY_ID,
        tenant_id=tenant_id,
        role=Role.CALLER,
        scopes=Scopes(),
        limits=KeyLimits(),
        name="in-process",
        prefix="internal",
    )


def _meta(context: CallContext | None) -> RequestMeta:
    if context is None:
        return RequestMeta()
    return RequestMeta(
        merchant_id=context.merchant_id,
        user_id=context.user_id,
        session_id=context.session_id,
        trace_name=context.trace_name,
        tags=tuple(context.tags),
        traceparent=context.traceparent,
    )


class Gateway:
    """An in-process :class:`~gateway.types.LLMGateway` over a :class:`GatewayEngine`.

    Args:
        engine: The request path.
        auth: Whom calls are attributed to.
        runtime: The runtime owning ``engine``, closed by :meth:`aclose` (None
            when the caller owns it).
    """

    def __init__(self, engine: GatewayEngine, auth: AuthContext, runtime: GatewayRuntime | None = None) -> None:
        self.engine = engine
        self.auth = auth
        self._runtime = runtime

    @classmethod
    async def start(
        cls,
        settings: Settings,
        *,
        database_url: str,
        redis_url: str,
        routing: RoutingConfig | None = None,
    ) -> Gateway:
        """Build a runtime and act as ``settings.gateway.api_key`` (or the internal identity)."""
        runtime = await GatewayRuntime.start(settings, database_url=database_url, redis_url=redis_url, routing=routing)
        try:
            key = settings.gateway.api_key
            auth = (
                await runtime.authenticator.authenticate(key.get_secret_value())
                if key is not None
                else internal_context()
            )
        except BaseException:
            await runtime.aclose()
            raise
        return cls(runtime.engine, auth, runtime)

    async def chat(self, request: ChatRequest, context: CallContext | None = None) -> ChatResponse:
        """Complete a chat, possibly with tool calls."""
        done = await self.engine.chat(self.auth, chat_payload(request), _meta(context))
        return parse_chat(done.body)

    async def stream_chat(self, request: ChatRequest, context: CallContext | None = None) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion as it is produced."""
        started = await self.engine.stream_chat(self.auth, chat_payload(request, stream=True), _meta(context))
        frames = started.frames
        try:
            async for frame in frames:
                chunk = parse_chunk(frame)
                if chunk is not None:
                    yield chunk
        finally:
            close = getattr(frames, "aclose", None)
            if close is not None:
                await close()

    async def embed(self, request: EmbeddingRequest, context: CallContext | None = None) -> EmbeddingResponse:
        """Embed ``request.input`` (one vector per text, same order)."""
        done = await self.engine.embeddings(self.auth, embedding_payload(request), _meta(context))
        return parse_embeddings(done.body, request.model)

    async def aclose(self) -> None:
        """Flush and close the runtime this gateway started."""
        if self._runtime is not None:
            await self._runtime.aclose()
            self._runtime = None
