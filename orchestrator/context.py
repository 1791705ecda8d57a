"""What graph nodes depend on, passed as LangGraph's run-time context (nothing built at import)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import OrchestratorSettings
from gateway.types import LLMGateway
from orchestrator.tracing import GraphTracer


@dataclass(frozen=True)
class AskContext:
    """One turn's dependencies and limits.

    Attributes:
        merchant_id: The authenticated merchant: the only scope any tool runs in.
            It never comes from the question or from a model.
        as_of: The merchant-local date treated as today.
        gateway: Every model call (chat, embeddings) goes through it.
        sessions: Async sessions on the RLS-bound app role; each tool run opens
            one scoped to ``merchant_id``.
        settings: Models, caps on tool calls and tokens, retrieval parameters.
        tracer: Spans for the run and its nodes.
        user_id: End user, for traces and usage.
        conversation_id: The conversation (Langfuse session), if any.
    """

    merchant_id: str
    as_of: date
    gateway: LLMGateway
    sessions: async_sessionmaker[AsyncSession]
    settings: OrchestratorSettings = field(default_factory=OrchestratorSettings)
    tracer: GraphTracer = field(default_factory=GraphTracer)
    user_id: str | None = None
    conversation_id: str | None = None
