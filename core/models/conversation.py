"""Co-pilot conversations and their messages."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, String, Text, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base
from core.models._types import check_in

MESSAGE_ROLES = ("user", "assistant")


class Conversation(Base):
    """A thread of questions and answers for one merchant."""

    __tablename__ = "conversations"
    __table_args__ = (Index("ix_conversations_merchant_updated", "merchant_id", "updated_at"),)

    conversation_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[str] = mapped_column(String(64), ForeignKey("merchants.merchant_id", ondelete="CASCADE"))
    title: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(server_default=func.now())


class ConversationMessage(Base):
    """One turn; assistant turns keep the facts and citations they were built from."""

    __tablename__ = "conversation_messages"
    __table_args__ = (
        CheckConstraint(check_in("role", MESSAGE_ROLES), name="role_valid"),
        Index("ix_conversation_messages_conversation", "conversation_id", "message_id"),
    )

    message_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("conversations.conversation_id", ondelete="CASCADE"))
    merchant_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    facts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    citations: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    trace_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
