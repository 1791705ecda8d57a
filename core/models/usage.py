"""One usage record per gateway request, for billing (platform table)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Identity, Index, Integer, String, Text, false, func
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base


class UsageRecord(Base):
    """``request_id`` is unique so a retried batch write never double-bills."""

    __tablename__ = "usage_records"
    __table_args__ = (
        Index("ix_usage_records_tenant_created", "tenant_id", "created_at"),
        Index("ix_usage_records_merchant_created", "merchant_id", "created_at"),
        Index("ix_usage_records_key_created", "key_id", "created_at"),
    )

    usage_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    request_id: Mapped[uuid.UUID] = mapped_column(unique=True)
    key_id: Mapped[uuid.UUID | None]
    tenant_id: Mapped[str | None] = mapped_column(String(64))
    merchant_id: Mapped[str | None] = mapped_column(String(64))
    endpoint: Mapped[str] = mapped_column(String(64))
    model: Mapped[str] = mapped_column(String(128))
    deployment: Mapped[str | None] = mapped_column(String(128))
    prompt_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    completion_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    # Cost in millionths of a US dollar: integers, like all money here.
    cost_micros_usd: Mapped[int] = mapped_column(BigInteger, server_default="0")
    latency_ms: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(32))
    cache_hit: Mapped[bool] = mapped_column(Boolean, server_default=false())
    stream: Mapped[bool] = mapped_column(Boolean, server_default=false())
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
