"""What every provider adapter implements, and the types the router passes around.

A provider turns one OpenAI-shaped request (a dict, already validated and
guarded by the service) into one upstream call against one
:class:`Deployment`. Results stay close to the wire:

- :meth:`Provider.chat` returns the response body as JSON ``bytes`` (passed
  to the client unchanged) plus the :class:`TokenUsage` read from it.
- :meth:`Provider.stream_chat` yields SSE events as ``bytes``, each one
  complete ``data: {...}\\n\\n`` frame of an OpenAI ``chat.completion.chunk``
  (the final ``data: [DONE]`` frame is not yielded; the service writes it). The
  request the provider sends upstream asks for usage in the final chunk
  (``stream_options.include_usage``); the service reads it from there.
- :meth:`Provider.embeddings` returns the body bytes plus usage.

Failures are :class:`UpstreamError` with ``retryable`` set by the provider
(connection errors, timeouts, 408/409/429/5xx are retryable; 400/401/403/404/
422 are not), so the router retries and falls back only where that can help.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import SecretStr

ProviderKind = Literal["openai", "azure", "litellm", "offline", "local-embed"]
Mode = Literal["chat", "embedding"]


@dataclass(frozen=True, slots=True)
class Deployment:
    """One concrete upstream behind a model alias.

    Attributes:
        name: Unique deployment name (metering, metrics, circuit breaker).
        alias: The model alias clients ask for.
        provider: Which adapter serves it: ``openai`` (the OpenAI wire format
            fast path: OpenAI, vLLM, Ollama, any compatible server), ``azure``
            (Azure OpenAI, fast path), ``litellm`` (any provider litellm
            knows, e.g. ``anthropic/...``, ``bedrock/...``), ``offline`` (the
            built-in model) or ``local-embed`` (the built-in embedder).
        model: The upstream model name (for ``litellm``, litellm's model string).
        mode: ``chat`` or ``embedding``.
        api_base: Base URL ending before ``/chat/completions`` (e.g.
            ``https://api.openai.com/v1``).
        api_key: Upstream credential (never logged).
        api_version: Azure API version.
        weight: Share of traffic under weighted balancing.
        timeout_s: Whole-call timeout (for streams: until the first byte, and
            between bytes).
        max_concurrency: In-flight cap for this deployment (None: unbounded).
        input_cost_per_token: USD per prompt token; None takes litellm's catalogue.
        output_cost_per_token: USD per completion token; None takes litellm's catalogue.
        cost_model: The catalogue name to price with when it differs from ``model``.
        extra_headers: Sent upstream with every call.
        params: Extra provider parameters (litellm kwargs, e.g. ``aws_region_name``).
    """

    name: str
    alias: str
    provider: ProviderKind
    model: str
    mode: Mode = "chat"
    api_base: str | None = None
    api_key: SecretStr | None = None
    api_version: str | None = None
    weight: float = 1.0
    timeout_s: float = 60.0
    max_concurrency: int | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    cost_model: str | None = None
    extra_headers: Mapping[str, str] = field(default_factory=dict)
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts reported by (or, failing that, counted for) one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Prompt plus completion tokens."""
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True, slots=True)
class ProviderResult:
    """A completed (non-streamed) call: the body to return and its usage."""

    body: bytes
    usage: TokenUsage


class UpstreamError(Exception):
    """A provider call failed.

    Attributes:
        status: HTTP status to report (the upstream's, or 502/504 for transport
            failures and timeouts).
        retryable: Whether retrying (or another deployment) may succeed.
        body: The upstream's error body, if any (OpenAI error shape).
        retry_after: Seconds the upstream asked to wait, if it said.
        deployment: Name of the deployment that failed (set by the router).
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 502,
        retryable: bool = True,
        body: bytes | None = None,
        retry_after: float | None = None,
        deployment: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = retryable
        self.body = body
        self.retry_after = retry_after
        self.deployment = deployment


RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


def is_retryable_status(status: int) -> bool:
    """Statuses worth a retry or a fallback."""
    return status in RETRYABLE_STATUSES or status >= 520


class LastFrames(bytes):
    """The last item of a stream, when the provider already knows it is the last.

    A provider that saw the upstream's ``[DONE]`` in the same read yields
    the remaining frames as ``LastFrames``; the relay then ends the
    response with them in one write instead of waiting for the stream to
    report its end. It is still ``bytes``: consumers that do not know it
    see an ordinary item.
    """

    __slots__ = ()


class Provider(Protocol):
    """An adapter that reaches one kind of upstream."""

    async def chat(self, deployment: Deployment, payload: Mapping[str, Any]) -> ProviderResult:
        """One chat completion; ``payload`` is the client's OpenAI request body."""
        ...

    def stream_chat(self, deployment: Deployment, payload: Mapping[str, Any]) -> AsyncIterator[bytes]:
        """SSE ``data:`` frames of the streamed completion (without ``[DONE]``).

        Each item holds one or more whole frames (``data: ...\\n\\n``): a
        provider may hand over everything one read brought in one item, and
        mark the stream's last item as :class:`LastFrames`.
        """
        ...

    async def embeddings(self, deployment: Deployment, payload: Mapping[str, Any]) -> ProviderResult:
        """One embeddings call."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
