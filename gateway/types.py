"""The ``LLMGateway`` protocol and its request/response types.

``orchestrator`` and ``pipelines`` depend on these types only; the in-process
gateway, the HTTP client for a remote gateway and test doubles all implement
the same protocol. Shapes follow the OpenAI wire format so requests pass
through the HTTP service unchanged.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field


class CallContext(BaseModel):
    """Who a call is made for: limits, costs and traces are attributed to it."""

    merchant_id: str | None = None
    user_id: str | None = None
    session_id: str | None = None
    trace_name: str | None = None
    tags: list[str] = Field(default_factory=list)
    traceparent: str | None = None  # W3C trace context: the call's generation nests under the caller's span


class Usage(BaseModel):
    """Token counts of one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class EmbeddingRequest(BaseModel):
    """Texts to embed with one model."""

    model: str
    input: list[str]


class EmbeddingResponse(BaseModel):
    """One vector per input text, in input order."""

    model: str
    data: list[list[float]]
    usage: Usage = Field(default_factory=Usage)


class ChatMessage(BaseModel):
    """One message of a chat (OpenAI shape)."""

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class ChatRequest(BaseModel):
    """A chat completion request (the subset of OpenAI's parameters we allow)."""

    model: str
    messages: list[ChatMessage]
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    response_format: dict[str, Any] | None = None


class ChatResponse(BaseModel):
    """A completed chat response."""

    id: str
    model: str
    message: ChatMessage
    finish_reason: str | None = None
    usage: Usage = Field(default_factory=Usage)


class ChatChunk(BaseModel):
    """One streamed delta; the last chunk carries ``usage``."""

    id: str
    model: str
    delta: str = ""
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    usage: Usage | None = None


@runtime_checkable
class EmbeddingClient(Protocol):
    """The part of the gateway batch pipelines need."""

    async def embed(self, request: EmbeddingRequest, context: CallContext | None = None) -> EmbeddingResponse:
        """Embed ``request.input`` (one vector per text, same order)."""
        ...


@runtime_checkable
class LLMGateway(EmbeddingClient, Protocol):
    """Every model call of the project goes through an implementation of this."""

    async def chat(self, request: ChatRequest, context: CallContext | None = None) -> ChatResponse:
        """Complete a chat, possibly with tool calls."""
        ...

    def stream_chat(self, request: ChatRequest, context: CallContext | None = None) -> AsyncIterator[ChatChunk]:
        """Stream a chat completion as it is produced."""
        ...


def batched(texts: Sequence[str], size: int) -> list[list[str]]:
    """Split ``texts`` into batches of at most ``size``."""
    if size < 1:
        raise ValueError("batch size must be at least 1")
    return [list(texts[i : i + size]) for i in range(0, len(texts), size)]
