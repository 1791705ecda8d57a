"""The litellm adapter: any provider litellm knows, the offline model and the local embedder.

Serves deployments with ``provider`` ``litellm`` (``deployment.model`` is
litellm's model string: ``anthropic/...``, ``bedrock/...``, ``openai/...``,
``azure/...``, ``ollama/...``), ``offline`` and ``local-embed`` (both reached
through the ``copilot-offline`` custom provider, see :mod:`gateway.offline`).

Choices:

- The client's payload is forwarded as litellm kwargs with ``model`` replaced
  by the deployment's model; the gateway's own fields (``metadata``) are not
  sent upstream. Deployment settings (api_base, api_key, api_version,
  timeout, extra_headers, params) override the payload.
- litellm's retries are off (``num_retries=0``, ``max_retries=0``): the
  router retries and falls back.
- Bodies report the **client's alias** in ``model`` (what it asked for; the
  deployment that served it is known to the router, metering and traces), and
  a stream keeps one ``id`` for all its chunks.
- The usage-only final chunk of a stream has ``choices: []``, as OpenAI sends it.
- litellm is imported on first use (the import takes seconds), with
  ``LITELLM_LOCAL_MODEL_COST_MAP=True`` so it never fetches its cost map.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping
from types import ModuleType
from typing import Any

import orjson

from core.config import export_to_children
from gateway.providers.base import Deployment, ProviderResult, TokenUsage, UpstreamError, is_retryable_status

_GATEWAY_FIELDS = frozenset({"model", "stream", "stream_options", "metadata"})
_litellm: ModuleType | None = None


def load_litellm() -> Any:
    """Import litellm once, offline (its cost map from the package, no telemetry)."""
    global _litellm
    if _litellm is None:
        export_to_children("LITELLM_LOCAL_MODEL_COST_MAP", "True", overwrite=False)
        import litellm

        litellm.telemetry = False
        litellm.suppress_debug_info = True
        _litellm = litellm
    return _litellm


def litellm_model(deployment: Deployment) -> str:
    """The model string litellm is called with for ``deployment``."""
    if deployment.provider in {"offline", "local-embed"}:
        from gateway.offline import OFFLINE_PROVIDER

        prefix = f"{OFFLINE_PROVIDER}/"
        return deployment.model if deployment.model.startswith(prefix) else prefix + deployment.model
    if deployment.provider == "azure" and not deployment.model.startswith("azure/"):
        return f"azure/{deployment.model}"
    return deployment.model


def _retry_after(exc: BaseException) -> float | None:
    headers: Any = getattr(exc, "litellm_response_headers", None)
    response = getattr(exc, "response", None)
    if headers is None and response is not None:
        headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after")
    except AttributeError:
        return None
    try:
        return max(0.0, float(value)) if value is not None else None
    except (TypeError, ValueError):
        return None


def upstream_error(exc: BaseException, deployment: Deployment | None = None) -> UpstreamError:
    """Map a litellm (or transport) failure to :class:`UpstreamError` with its status and retryability."""
    litellm = load_litellm()
    name = deployment.name if deployment else None
    message = str(getattr(exc, "message", None) or exc) or type(exc).__name__
    transport = _transport_failure(exc)
    if isinstance(exc, litellm.Timeout | asyncio.TimeoutError | TimeoutError) or transport == "timeout":
        status, retryable = 504, True
    elif isinstance(exc, litellm.APIConnectionError) or transport == "connection":
        status, retryable = 502, True
    elif isinstance(
        exc,
        litellm.ContextWindowExceededError
        | litellm.ContentPolicyViolationError
        | litellm.BadRequestError
        | litellm.AuthenticationError
        | litellm.PermissionDeniedError
        | litellm.NotFoundError
        | litellm.UnprocessableEntityError,
    ):
        status, retryable = int(getattr(exc, "status_code", 400) or 400), False
    else:
        raw = getattr(exc, "status_code", None)
        status = int(raw) if isinstance(raw, int) and 400 <= raw <= 599 else 502
        retryable = is_retryable_status(status)
    code = type(exc).__name__
    error_type = "invalid_request_error" if 400 <= status < 500 and not retryable else "api_error"
    body = orjson.dumps({"error": {"message": message, "type": error_type, "code": code, "param": None}})
    return UpstreamError(
        message, status=status, retryable=retryable, body=body, retry_after=_retry_after(exc), deployment=name
    )


def _transport_failure(exc: BaseException) -> str | None:
    """``timeout``/``connection`` when the failure (or what it wraps) is a transport one."""
    import httpx
    import openai

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, openai.APITimeoutError | httpx.TimeoutException):
            return "timeout"
        if isinstance(current, openai.APIConnectionError | httpx.TransportError):
            return "connection"
        current = current.__cause__ or current.__context__
    return None


def _is_upstream_failure(exc: BaseException) -> bool:
    litellm = load_litellm()
    import httpx
    import openai

    return isinstance(
        exc, openai.OpenAIError | httpx.HTTPError | TimeoutError | litellm.exceptions.MidStreamFallbackError
    )


class LitellmProvider:
    """A :class:`~gateway.providers.base.Provider` on top of ``litellm.acompletion``/``aembedding``."""

    def __init__(self) -> None:
        self._ready = False

    def _setup(self) -> Any:
        litellm = load_litellm()
        if not self._ready:
            from gateway.offline import register_offline_provider

            register_offline_provider()
            self._ready = True
        return litellm

    def _kwargs(self, deployment: Deployment, payload: Mapping[str, Any]) -> dict[str, Any]:
        kwargs = {k: v for k, v in payload.items() if k not in _GATEWAY_FIELDS}
        kwargs["model"] = litellm_model(deployment)
        if deployment.api_base:
            kwargs["api_base"] = deployment.api_base
        if deployment.api_key is not None:
            kwargs["api_key"] = deployment.api_key.get_secret_value()
        if deployment.api_version:
            kwargs["api_version"] = deployment.api_version
        if deployment.extra_headers:
            kwargs["extra_headers"] = {**dict(kwargs.get("extra_headers") or {}), **deployment.extra_headers}
        kwargs.update(deployment.params)
        kwargs["timeout"] = deployment.timeout_s
        kwargs["num_retries"] = 0
        kwargs["max_retries"] = 0
        return kwargs

    async def chat(self, deployment: Deployment, payload: Mapping[str, Any]) -> ProviderResult:
        """One chat completion; the body is OpenAI JSON with the client's alias as ``model``."""
        litellm = self._setup()
        kwargs = self._kwargs(deployment, payload)
        kwargs["stream"] = False
        try:
            async with asyncio.timeout(deployment.timeout_s):
                response = await litellm.acompletion(**kwargs)
        except Exception as exc:
            if _is_upstream_failure(exc):
                raise upstream_error(exc, deployment) from exc
            raise
        body = response.model_dump()
        body["model"] = payload.get("model") or deployment.alias
        return ProviderResult(orjson.dumps(body), _usage(body.get("usage")))

    async def stream_chat(self, deployment: Deployment, payload: Mapping[str, Any]) -> AsyncIterator[bytes]:
        """SSE frames of the streamed completion; the last one carries usage (no ``[DONE]``)."""
        litellm = self._setup()
        kwargs = self._kwargs(deployment, payload)
        kwargs["stream"] = True
        kwargs["stream_options"] = {"include_usage": True}
        alias = payload.get("model") or deployment.alias
        timeout = deployment.timeout_s
        try:
            async with asyncio.timeout(timeout):
                stream = await litellm.acompletion(**kwargs)
        except Exception as exc:
            if _is_upstream_failure(exc):
                raise upstream_error(exc, deployment) from exc
            raise
        iterator = stream.__aiter__()
        stream_id: str | None = None
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):  # until the first byte, then between chunks
                        chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    if _is_upstream_failure(exc):
                        raise upstream_error(exc, deployment) from exc
                    raise
                data = chunk.model_dump(exclude_none=True)
                stream_id = stream_id or data.get("id")
                data["id"] = stream_id
                data["model"] = alias
                data["object"] = "chat.completion.chunk"
                if data.get("usage") and _empty_choices(data.get("choices")):
                    data["choices"] = []
                yield b"data: " + orjson.dumps(data) + b"\n\n"
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                # Closing a finished or failed stream must not mask the result.
                with contextlib.suppress(Exception):
                    await close()

    async def embeddings(self, deployment: Deployment, payload: Mapping[str, Any]) -> ProviderResult:
        """One embeddings call; the body is OpenAI JSON with the client's alias as ``model``."""
        litellm = self._setup()
        kwargs = self._kwargs(deployment, payload)
        kwargs["input"] = payload.get("input", [])
        try:
            async with asyncio.timeout(deployment.timeout_s):
                response = await litellm.aembedding(**kwargs)
        except Exception as exc:
            if _is_upstream_failure(exc):
                raise upstream_error(exc, deployment) from exc
            raise
        body = response.model_dump()
        body["model"] = payload.get("model") or deployment.alias
        body["object"] = "list"
        return ProviderResult(orjson.dumps(body), _usage(body.get("usage")))

    async def aclose(self) -> None:
        """litellm owns its HTTP clients (cached per process); nothing to release here."""


def _empty_choices(choices: Any) -> bool:
    if not choices:
        return True
    for choice in choices:
        delta = choice.get("delta") or {}
        if choice.get("finish_reason") or delta.get("content") or delta.get("tool_calls"):
            return False
    return True


def _usage(usage: Any) -> TokenUsage:
    if not isinstance(usage, Mapping):
        return TokenUsage()
    return TokenUsage(
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
    )


__all__ = ["LitellmProvider", "litellm_model", "load_litellm", "upstream_error"]
