"""Proactive insights found for a merchant."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import CheckConstraint, Date, Float, ForeignKey, Index, String, Text, UniqueConstraint, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base
from core.models._types import Money, check_in

INSIGHT_DIRECTIONS = ("up", "down")
INSIGHT_STATUSES = ("new", "delivered", "dismissed", "suppressed")


class Insight(Base):
    """A verified, narrated finding with the facts that support it."""

    __tablename__ = "insights"
    __table_args__ = (
        CheckConstraint(check_in("direction", INSIGHT_DIRECTIONS), name="direction_valid"),
        CheckConstraint(check_in("status", INSIGHT_STATUSES), name="status_valid"),
        # Re-running a day's detection must not store the same finding twice.
        UniqueConstraint("merchant_id", "dedup_key"),
        Index("ix_insights_merchant_created", "merchant_id", "created_at"),
    )

    insight_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[str] = mapped_column(String(64), ForeignKey("merchants.merchant_id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(64))
    metric: Mapped[str] = mapped_column(String(64))
    direction: Mapped[str] = mapped_column(String(8))
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    as_of: Mapped[date] = mapped_column(Date)
    impact_minor: Mapped[Money]
    confidence: Mapped[float] = mapped_column(Float)
    score: Mapped[float] = mapped_column(Float)
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    facts: Mapped[list[dict[str, Any]]] = mapped_column(JSONB, server_default="[]")
    evidence: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    dedup_key: Mapped[str] = mapped_column(String(256))
    status: Mapped[str] = mapped_column(String(16), server_default="new")
    trace_id: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
