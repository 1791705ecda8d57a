"""``HttpGateway``: the :class:`~gateway.types.LLMGateway` protocol over HTTP.

What the orchestrator, pipelines and evals use in production: every call
goes to a remote gateway (``settings.gateway.url``) with the process's own
key, carrying the call's merchant, user and session as ``X-Copilot-*``
headers. The gateway's OpenAI-shaped errors come back as
:class:`RemoteGatewayError` with the status, code and message it sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
from pydantic import SecretStr

from core.errors import ConfigurationError
from gateway.errors import GatewayError
from gateway.types import CallContext, ChatChunk, ChatRequest, ChatResponse, EmbeddingRequest, EmbeddingResponse
from gateway.wire import (
    chat_payload,
    context_headers,
    embedding_payload,
    parse_chat,
    parse_chunk,
    parse_embeddings,
)


class RemoteGatewayError(GatewayError):
    """The remote gateway refused or failed a call.

    Attributes:
        status: The HTTP status it answered.
        code: Its error code (``rate_limit_exceeded``, ``budget_exceeded``, ...).
        retry_after: Seconds it asked to wait, if it said.
    """

    def __init__(
        self, message: str, *, status: int, code: str | None, param: str | None, retry_after: float | None
    ) -> None:
        super().__init__(message, param=param)
        # Per instance: the remote gateway's answer, not a fixed class value.
        self.status = status  # type: ignore[misc]
        self.code = code or "gateway_error"  # type: ignore[misc]
        self.retry_after = retry_after


def _raise_for(response: httpx.Response, body: bytes) -> None:
    if response.status_code < 400:
        return
    message, code, param = f"gateway answered HTTP {response.status_code}", None, None
    try:
        error = orjson.loads(body).get("error") or {}
        message = str(error.get("message") or message)
        code, param = error.get("code"), error.get("param")
    except (orjson.JSONDecodeError, AttributeError):
        pass
    retry = response.headers.get("retry-after")
    raise RemoteGatewayError(
        message,
        status=response.status_code,
        code=code,
        param=param,
        retry_after=float(retry) if retry and retry.replace(".", "", 1).isdigit() else None,
    )


class HttpGateway:
    """A client of a remote gateway.

    Args:
        base_url: The gateway's URL (``http://host:4000``).
        api_key: The caller's virtual key.
        timeout_s: Per-request timeout (streams: between bytes).
        transport: An httpx transport (tests may pass an ASGI transport).
    """

    def __init__(
        self,
        base_url: str,
        api_key: SecretStr | str,
        *,
        timeout_s: float = 120.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not base_url:
            raise ConfigurationError("HttpGateway needs the gateway URL (COPILOT_GATEWAY__URL)")
        secret = api_key.get_secret_value() if isinstance(api_key, SecretStr) else api_key
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {secret}"},
            timeout=httpx.Timeout(timeout_s, connect=10.0),
            transport=transport,
        )

    async def _post(self, path: str, payload: dict[str, Any], context: CallContext | None) -> bytes:
        response = await self._client.post(
            path,
            content=orjson.dumps(payload),
            headers={"Content-Type": "application/json", **context_headers(context)},
        )
        body = response.content
        _raise_for(response, body)
        return body

    async def chat(self, request: ChatRequest, context: CallContext | None = None) -> ChatResponse:
        """Complete a chat, possibly with tool calls."""
        return parse_chat(await self._post("/v1/chat/completions", chat_payload(request), context))

    async def stream_chat(self, request: ChatRequest, context: CallContext | None = None) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion; a stream that breaks midway raises :class:`RemoteGatewayError`."""
        async with self._client.stream(
            "POST",
            "/v1/chat/completions",
            content=orjson.dumps(chat_payload(request, stream=True)),
            headers={"Content-Type": "application/json", "Accept": "text/event-stream", **context_headers(context)},
        ) as response:
            if response.status_code >= 400:
                _raise_for(response, await response.aread())
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                try:
                    chunk = parse_chunk(line.encode())
                except ValueError as exc:
                    raise RemoteGatewayError(
                        str(exc), status=502, code="upstream_error", param=None, retry_after=None
                    ) from exc
                if chunk is None:
                    return
                yield chunk

    async def embed(self, request: EmbeddingRequest, context: CallContext | None = None) -> EmbeddingResponse:
        """Embed ``request.input`` (one vector per text, same order)."""
        body = await self._post("/v1/embeddings", embedding_payload(request), context)
        return parse_embeddings(body, request.model)

    async def models(self) -> list[str]:
        """The model aliases this key may call."""
        response = await self._client.get("/v1/models")
        _raise_for(response, response.content)
        return [str(item["id"]) for item in orjson.loads(response.content).get("data", [])]

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()
