"""Conversions between the protocol's types and the OpenAI wire format.

Both :class:`~gateway.inprocess.Gateway` and :class:`~gateway.http_client.HttpGateway`
speak the wire format to the engine/service and hand typed objects to
callers; these functions are that translation, in one place.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.types import (
    CallContext,
    ChatChunk,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    EmbeddingRequest,
    EmbeddingResponse,
    Usage,
)


def chat_payload(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    """The OpenAI request body of ``request``."""
    payload = request.model_dump(mode="json", exclude_none=True)
    payload["messages"] = [m.model_dump(mode="json", exclude_none=True) for m in request.messages]
    if stream:
        payload["stream"] = True
        payload["stream_options"] = {"include_usage": True}
    return payload


def embedding_payload(request: EmbeddingRequest) -> dict[str, Any]:
    """The OpenAI request body of ``request``."""
    return {"model": request.model, "input": list(request.input)}


def context_headers(context: CallContext | None) -> dict[str, str]:
    """``X-Copilot-*`` headers carrying a call's context to a remote gateway."""
    if context is None:
        return {}
    out: dict[str, str] = {}
    if context.merchant_id:
        out["X-Copilot-Merchant"] = context.merchant_id
    if context.user_id:
        out["X-Copilot-User"] = context.user_id
    if context.session_id:
        out["X-Copilot-Session"] = context.session_id
    if context.trace_name:
        out["X-Copilot-Trace-Name"] = context.trace_name
    if context.traceparent:
        out["traceparent"] = context.traceparent
    return out


def _usage(data: dict[str, Any] | None) -> Usage:
    data = data or {}
    prompt = int(data.get("prompt_tokens") or 0)
    completion = int(data.get("completion_tokens") or 0)
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion)


def parse_chat(body: bytes | dict[str, Any]) -> ChatResponse:
    """A ``chat.completion`` body as a :class:`ChatResponse` (first choice)."""
    data = orjson.loads(body) if isinstance(body, bytes | bytearray) else body
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    return ChatResponse(
        id=str(data.get("id") or ""),
        model=str(data.get("model") or ""),
        message=ChatMessage(
            role="assistant",
            content=message.get("content"),
            tool_calls=message.get("tool_calls") or None,
        ),
        finish_reason=choice.get("finish_reason"),
        usage=_usage(data.get("usage")),
    )


def parse_chunk(frame: bytes) -> ChatChunk | None:
    """One SSE ``data:`` frame as a :class:`ChatChunk` (None for ``[DONE]``).

    Raises:
        ValueError: The frame carries an ``error`` object (a stream that broke
            after it started); the message is the upstream's.
    """
    data_bytes = frame[5:].strip() if frame.startswith(b"data:") else frame.strip()
    if data_bytes == b"[DONE]" or not data_bytes:
        return None
    data = orjson.loads(data_bytes)
    if "error" in data:
        error = data["error"] or {}
        raise ValueError(str(error.get("message") or "stream failed"))
    choices = data.get("choices") or []
    delta = (choices[0].get("delta") or {}) if choices else {}
    usage = data.get("usage")
    return ChatChunk(
        id=str(data.get("id") or ""),
        model=str(data.get("model") or ""),
        delta=delta.get("content") or "",
        tool_calls=delta.get("tool_calls") or None,
        finish_reason=choices[0].get("finish_reason") if choices else None,
        usage=_usage(usage) if usage else None,
    )


def parse_embeddings(body: bytes | dict[str, Any], model: str) -> EmbeddingResponse:
    """An embeddings body as an :class:`EmbeddingResponse` (vectors in input order)."""
    data = orjson.loads(body) if isinstance(body, bytes | bytearray) else body
    items = sorted(data.get("data") or [], key=lambda item: int(item.get("index") or 0))
    return EmbeddingResponse(
        model=str(data.get("model") or model),
        data=[[float(x) for x in item["embedding"]] for item in items],
        usage=_usage(data.get("usage")),
    )


def frame_text(frame: bytes) -> str:
    """The generated text (content and tool-call arguments) of one chunk frame."""
    try:
        data = orjson.loads(frame[5:])
    except orjson.JSONDecodeError:
        return ""
    parts: list[str] = []
    for choice in data.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content"):
            parts.append(str(delta["content"]))
        for call in delta.get("tool_calls") or ():
            function = call.get("function") or {}
            parts.append(str(function.get("name") or ""))
            parts.append(str(function.get("arguments") or ""))
    return "".join(parts)


class LazyCompletionText:
    """A completion's text, extracted only when the tracer's worker thread serializes it."""

    __slots__ = ("_source",)

    def __init__(self, source: bytes | list[bytes]) -> None:
        self._source = source

    def __str__(self) -> str:
        if isinstance(self._source, list):
            return "".join(frame_text(frame) for frame in self._source)
        try:
            message = (orjson.loads(self._source).get("choices") or [{}])[0].get("message") or {}
        except (orjson.JSONDecodeError, AttributeError):
            return ""
        if message.get("tool_calls"):
            return orjson.dumps({"content": message.get("content"), "tool_calls": message["tool_calls"]}).decode()
        return str(message.get("content") or "")
