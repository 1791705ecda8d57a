"""The fast path: deployments that already speak the OpenAI wire format.

OpenAI, Azure OpenAI, vLLM, Ollama and any OpenAI-compatible server are
reached through one keep-alive HTTP/1.1 pool (:mod:`gateway.providers.http1`:
httptools parsing, a header block prepared once per deployment and path):
the request body is the client's,
with ``model`` set to the deployment's and (for streams) usage requested in
the final chunk; the response body and the SSE frames go back as they come.
Nothing here parses more than it must: a completed body is decoded once to
read ``usage``; stream frames are split on the SSE event boundary and passed
on as bytes (the service reads usage from the last one).

litellm's Router costs about 2 ms of CPU per call; this path costs well
under a hundred microseconds, and shares auth, limits, metering and tracing
with the litellm path because both sit behind the same
:class:`~gateway.router.Router`.

Timeouts: connecting is bounded here (``connect_timeout_s``); the
deployment's ``timeout_s`` is applied by the router around the whole call,
or around the wait for each frame of a stream, and a call it cuts closes its
connection. Connection failures (refused, reset, closed early, not HTTP)
are retryable 502s; a timeout is a 504.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import orjson

from gateway.providers.base import (
    Deployment,
    LastFrames,
    ProviderResult,
    TokenUsage,
    UpstreamError,
    is_retryable_status,
)
from gateway.providers.http1 import Http1Pool, HttpClientError, Target

logger = logging.getLogger(__name__)

_JSON: Final = "application/json"
_DONE: Final = b"[DONE]"
# Keys of our own that never go upstream (consumed by the gateway).
_GATEWAY_ONLY: Final = frozenset({"metadata"})


def usage_from(data: Mapping[str, Any]) -> TokenUsage:
    """The token usage of an OpenAI response or final stream chunk (zeros if absent)."""
    usage = data.get("usage") or {}
    return TokenUsage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def _retry_after(headers: Mapping[str, str]) -> float | None:
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            return float(value) / 1000
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date: ignore, the router's backoff applies


def _upstream_error(deployment: Deployment, status: int, body: bytes, headers: Mapping[str, str]) -> UpstreamError:
    message = f"upstream {deployment.name} answered HTTP {status}"
    try:
        detail = orjson.loads(body).get("error", {}).get("message")
        if detail:
            message = f"{message}: {str(detail)[:300]}"
    except (orjson.JSONDecodeError, AttributeError):
        pass
    return UpstreamError(
        message,
        status=status,
        retryable=is_retryable_status(status),
        body=body or None,
        retry_after=_retry_after(headers),
        deployment=deployment.name,
    )


class OpenAIProvider:
    """One pooled HTTP client for every OpenAI-format deployment.

    Args:
        max_connections: Pool size across all upstream hosts.
        max_connections_per_host: Kept for compatibility; the pool bounds the total only.
        connect_timeout_s: Bound on establishing a connection.
    """

    def __init__(
        self,
        *,
        max_connections: int = 1000,
        max_connections_per_host: int = 0,
        connect_timeout_s: float = 5.0,
    ) -> None:
        self._max_connections = max_connections
        self._connect_timeout_s = connect_timeout_s
        self._pool: Http1Pool | None = None
        self._targets: dict[tuple[str, str, bool], Target] = {}

    def _client(self) -> Http1Pool:
        pool = self._pool
        if pool is None:
            pool = self._pool = Http1Pool(
                max_connections=self._max_connections, connect_timeout_s=self._connect_timeout_s
            )
        return pool

    def _target(self, deployment: Deployment, path: str, stream: bool) -> Target:
        cache_key = (deployment.name, path, stream)
        target = self._targets.get(cache_key)
        if target is None:
            base = (deployment.api_base or "").rstrip("/")
            headers = {"Content-Type": _JSON, "Accept": "text/event-stream" if stream else _JSON}
            if deployment.provider == "azure":
                url = f"{base}/openai/deployments/{deployment.model}/{path}?api-version={deployment.api_version}"
                if deployment.api_key is not None:
                    headers["api-key"] = deployment.api_key.get_secret_value()
            else:
                url = f"{base}/{path}"
                if deployment.api_key is not None:
                    headers["Authorization"] = f"Bearer {deployment.api_key.get_secret_value()}"
            headers.update(deployment.extra_headers)
            target = self._targets[cache_key] = Target(url, headers)
        return target

    @staticmethod
    def _body(deployment: Deployment, payload: Mapping[str, Any], *, stream: bool) -> bytes:
        body = {k: v for k, v in payload.items() if k not in _GATEWAY_ONLY}
        body["model"] = deployment.model
        if stream:
            body["stream"] = True
            options = dict(body.get("stream_options") or {})
            options["include_usage"] = True
            body["stream_options"] = options
        elif "stream" in body:
            body["stream"] = False
        return orjson.dumps(body)

    async def _post(self, deployment: Deployment, path: str, body: bytes) -> ProviderResult:
        try:
            resp = await self._client().post(self._target(deployment, path, False), body)
            raw = await resp.read()
        except TimeoutError as exc:
            raise UpstreamError(
                f"upstream {deployment.name} timed out after {deployment.timeout_s:g}s",
                status=504,
                deployment=deployment.name,
            ) from exc
        except HttpClientError as exc:
            raise UpstreamError(
                f"upstream {deployment.name} unreachable: {type(exc).__name__}", status=502, deployment=deployment.name
            ) from exc
        if resp.status != 200:
            raise _upstream_error(deployment, resp.status, raw, resp.headers)
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError(
                f"upstream {deployment.name} sent a body that is not JSON", status=502, deployment=deployment.name
            ) from exc
        return ProviderResult(raw, usage_from(data))

    async def chat(self, deployment: Deployment, payload: Mapping[str, Any]) -> ProviderResult:
        """One chat completion, body passed through unchanged."""
        return await self._post(deployment, "chat/completions", self._body(deployment, payload, stream=False))

    async def embeddings(self, deployment: Deployment, payload: Mapping[str, Any]) -> ProviderResult:
        """One embeddings call, body passed through unchanged."""
        return await self._post(deployment, "embeddings", self._body(deployment, payload, stream=False))

    async def stream_chat(self, deployment: Deployment, payload: Mapping[str, Any]) -> AsyncIterator[bytes]:
        """Yield the upstream's SSE ``data:`` frames as they arrive (``[DONE]`` excluded).

        Each item holds the whole frames one read brought (one frame when
        tokens trickle in, many from a fast upstream): relaying them costs a
        write per read, not per frame.
        """
        body = self._body(deployment, payload, stream=True)
        try:
            resp = await self._client().post(self._target(deployment, "chat/completions", True), body)
            if resp.status != 200:
                raw = await resp.read()
                raise _upstream_error(deployment, resp.status, raw, resp.headers)
        except TimeoutError as exc:
            raise UpstreamError(
                f"upstream {deployment.name} stream stalled for {deployment.timeout_s:g}s",
                status=504,
                deployment=deployment.name,
            ) from exc
        except HttpClientError as exc:
            raise UpstreamError(
                f"upstream {deployment.name} unreachable: {type(exc).__name__}", status=502, deployment=deployment.name
            ) from exc
        pieces = resp.chunks()
        try:
            buffer = b""
            async for piece in pieces:
                buffer = buffer + piece if buffer else piece
                if b"\r" in buffer:
                    buffer = buffer.replace(b"\r\n", b"\n")
                out: list[bytes] = []
                start = 0
                done = False
                while not done:
                    end = buffer.find(b"\n\n", start)
                    if end < 0:
                        break
                    event = buffer[start:end]
                    start = end + 2
                    for line in event.split(b"\n"):
                        if not line.startswith(b"data:"):
                            continue  # comments, event names, keep-alives
                        data = line[5:].strip()
                        if data == _DONE:
                            done = True
                            break
                        if data:
                            out.append(b"data: " + data + b"\n\n")
                buffer = buffer[start:]
                if done:  # the rest of the stream, marked as its end
                    resp.discard()  # the connection goes back once the body's last bytes arrive
                    if out:
                        yield LastFrames(b"".join(out))
                    return
                if out:  # everything this read brought, in one item
                    yield out[0] if len(out) == 1 else b"".join(out)
        except TimeoutError as exc:
            raise UpstreamError(
                f"upstream {deployment.name} stream stalled for {deployment.timeout_s:g}s",
                status=504,
                deployment=deployment.name,
            ) from exc
        except HttpClientError as exc:
            raise UpstreamError(
                f"upstream {deployment.name} stream broke: {type(exc).__name__}",
                status=502,
                deployment=deployment.name,
            ) from exc
        finally:
            # Closing the pieces hands the connection back when the response is complete
            # (exhausted, or [DONE] in its last piece) and drops it when cut short.
            await pieces.aclose()

    async def aclose(self) -> None:
        """Close the pooled connections."""
        if self._pool is not None:
            await self._pool.aclose()
        self._pool = None
