"""Asking the co-pilot: one traced graph run per question, conversations kept in Postgres.

    copilot = Copilot(gateway=gw, sessions=app_sessions, settings=settings.orchestrator,
                      tracer=GraphTracer(langfuse), checkpointer=saver)
    reply = await copilot.ask("M0001", "How much did I make last week?")
    reply.answer, reply.facts, reply.citations, reply.trace_id

The merchant id must come from the authenticated caller. A conversation's
thread in the checkpointer is keyed by ``merchant_id:conversation_id``, built
here from that authenticated id, so no question or conversation id can reach
another merchant's history; the conversation rows themselves live in
RLS-protected tables.
"""

from __future__ import annotations

import uuid
from datetime import date
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.config import OrchestratorSettings
from core.db.session import async_session_scope
from core.errors import ValidationFailedError
from core.metrics import MerchantNotVisibleError
from core.metrics.periods import today_in
from gateway.types import LLMGateway
from orchestrator.context import AskContext
from orchestrator.graph import build_ask_graph
from orchestrator.state import new_turn
from orchestrator.tracing import GraphTracer

MAX_QUESTION_CHARS = 2_000


class AskReply(BaseModel):
    """What a merchant gets back for one question."""

    answer: str
    facts: list[dict[str, Any]] = Field(default_factory=list)
    citations: list[dict[str, Any]] = Field(default_factory=list)
    chart: dict[str, Any] | None = None
    follow_ups: list[str] = Field(default_factory=list)
    language: str = "en"
    source: str = Field(description="model | repaired | fallback | refusal: how the wording was produced")
    trace_id: str
    conversation_id: str | None = None
    as_of: date
    refused_calls: list[dict[str, str]] = Field(default_factory=list)
    tokens: int = 0


_MERCHANT_ZONE = text("SELECT timezone FROM merchants WHERE merchant_id = :merchant_id")
_NEW_CONVERSATION = text(
    "INSERT INTO conversations (conversation_id, merchant_id, title) VALUES (:cid, :mid, :title) "
    "ON CONFLICT (conversation_id) DO UPDATE SET updated_at = now() "
    "WHERE conversations.merchant_id = EXCLUDED.merchant_id RETURNING merchant_id"
)
_MESSAGE = text(
    "INSERT INTO conversation_messages (conversation_id, merchant_id, role, content, facts, citations, trace_id) "
    "VALUES (:cid, :mid, :role, :content, CAST(:facts AS jsonb), CAST(:citations AS jsonb), :trace_id)"
)


class Copilot:
    """The ask graph with its dependencies, built once per process.

    Args:
        gateway: Model calls.
        sessions: Async sessions on the RLS-bound app role.
        settings: Models and per-turn caps.
        tracer: Langfuse spans (a no-op tracer when Langfuse is off).
        checkpointer: LangGraph checkpointer for conversations (None: no memory across questions).
    """

    def __init__(
        self,
        *,
        gateway: LLMGateway,
        sessions: async_sessionmaker[AsyncSession],
        settings: OrchestratorSettings | None = None,
        tracer: GraphTracer | None = None,
        checkpointer: Any = None,
    ) -> None:
        self.gateway = gateway
        self.sessions = sessions
        self.settings = settings or OrchestratorSettings()
        self.tracer = tracer or GraphTracer()
        self.checkpointer = checkpointer
        self.graph = build_ask_graph(checkpointer)
        self.stateless_graph = build_ask_graph(None)  # single questions keep no thread

    async def _today(self, merchant_id: str) -> date:
        async with async_session_scope(self.sessions, merchant_id) as session:
            zone = (await session.execute(_MERCHANT_ZONE, {"merchant_id": merchant_id})).scalar_one_or_none()
        if zone is None:
            raise MerchantNotVisibleError(f"merchant {merchant_id} not found")
        return today_in(str(zone))

    async def ask(
        self,
        merchant_id: str,
        question: str,
        *,
        as_of: date | None = None,
        conversation_id: str | None = None,
        user_id: str | None = None,
    ) -> AskReply:
        """Answer one question for the authenticated merchant.

        Raises:
            ValidationFailedError: An empty or overlong question, or a bad conversation id.
            MerchantNotVisibleError: The merchant does not exist.
            GatewayError: The model could not be reached (after the gateway's own retries/fallbacks).
        """
        question = question.strip()
        if not question:
            raise ValidationFailedError("the question is empty")
        if len(question) > MAX_QUESTION_CHARS:
            raise ValidationFailedError(f"the question is longer than {MAX_QUESTION_CHARS} characters")
        if conversation_id is not None:
            try:
                conversation_id = str(uuid.UUID(conversation_id))
            except ValueError as exc:
                raise ValidationFailedError("conversation id must be a UUID") from exc
        today = await self._today(merchant_id)
        if as_of is None:
            as_of = today
        context = AskContext(
            merchant_id=merchant_id, as_of=as_of, gateway=self.gateway, sessions=self.sessions,
            settings=self.settings, tracer=self.tracer, user_id=user_id, conversation_id=conversation_id,
        )  # fmt: skip
        config: dict[str, Any] = {}
        graph = self.stateless_graph
        if conversation_id is not None and self.checkpointer is not None:
            config = {"configurable": {"thread_id": f"{merchant_id}:{conversation_id}"}}
            graph = self.graph
        with self.tracer.run(
            "ask", input={"question": question}, user_id=user_id, session_id=conversation_id,
            metadata={"merchant_id": merchant_id, "as_of": as_of.isoformat()},
        ) as (trace_id, root):  # fmt: skip
            state = await graph.ainvoke(new_turn(question), config, context=context, durability="exit")
            root.update(output={"answer": state["answer"], "source": state["answer_source"]})
        reply = AskReply(
            answer=state["answer"],
            facts=state.get("facts") or [],
            citations=state.get("citations") or [],
            chart=state.get("chart"),
            follow_ups=state.get("follow_ups") or [],
            language=state.get("language", "en"),
            source=state.get("answer_source", "none"),
            trace_id=trace_id,
            conversation_id=conversation_id,
            as_of=as_of,
            refused_calls=state.get("refused_calls") or [],
            tokens=state.get("tokens_used", 0),
        )
        if conversation_id is not None:
            await self._record(merchant_id, conversation_id, question, reply)
        return reply

    async def _record(self, merchant_id: str, conversation_id: str, question: str, reply: AskReply) -> None:
        """Keep both turns in the merchant's conversation (RLS applies)."""
        import json

        async with async_session_scope(self.sessions, merchant_id) as session:
            owner = (
                await session.execute(
                    _NEW_CONVERSATION, {"cid": conversation_id, "mid": merchant_id, "title": question[:120]}
                )
            ).scalar_one_or_none()
            if owner is None:
                raise ValidationFailedError("conversation not found")
            for role, content, facts, citations in (
                ("user", question, [], []),
                ("assistant", reply.answer, reply.facts, reply.citations),
            ):
                await session.execute(
                    _MESSAGE,
                    {
                        "cid": conversation_id, "mid": merchant_id, "role": role, "content": content,
                        "facts": json.dumps(facts), "citations": json.dumps(citations), "trace_id": reply.trace_id,
                    },
                )  # fmt: skip
