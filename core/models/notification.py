"""Notifications to merchants, the transactional outbox, and webhook endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base
from core.models._types import check_in

CHANNELS = ("webhook", "push", "feed")
NOTIFICATION_STATUSES = ("pending", "sent", "failed", "dead")


class Notification(Base):
    """A message for a merchant on one channel, with its delivery state."""

    __tablename__ = "notifications"
    __table_args__ = (
        CheckConstraint(check_in("channel", CHANNELS), name="channel_valid"),
        CheckConstraint(check_in("status", NOTIFICATION_STATUSES), name="status_valid"),
        Index("ix_notifications_merchant_created", "merchant_id", "created_at"),
    )

    notification_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[str] = mapped_column(String(64), ForeignKey("merchants.merchant_id", ondelete="CASCADE"))
    insight_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("insights.insight_id", ondelete="SET NULL"))
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    sent_at: Mapped[datetime | None]


class NotificationOutbox(Base):
    """Events written in the same transaction as the change that caused them.

    A relay dispatches undispatched rows after commit, so a crash between the
    commit and the Celery send loses nothing; ``idempotency_key`` stops a
    re-run from queueing the same event twice.
    """

    __tablename__ = "notification_outbox"
    __table_args__ = (
        Index("ix_notification_outbox_pending", "available_at", postgresql_where=text("dispatched_at IS NULL")),
        Index("uq_notification_outbox_idempotency_key", "idempotency_key", unique=True),
    )

    outbox_id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(64))
    idempotency_key: Mapped[str] = mapped_column(String(256))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    available_at: Mapped[datetime] = mapped_column(server_default=func.now())
    dispatched_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())


class WebhookEndpoint(Base):
    """Where a merchant wants signed insight webhooks delivered.

    The signing secret is needed in clear to compute HMACs, so it is stored
    encrypted with a server key, never hashed and never returned after creation.
    """

    __tablename__ = "webhook_endpoints"

    endpoint_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    merchant_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("merchants.merchant_id", ondelete="CASCADE"), index=True
    )
    url: Mapped[str] = mapped_column(Text)
    secret_encrypted: Mapped[bytes] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=true())
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    disabled_at: Mapped[datetime | None]
