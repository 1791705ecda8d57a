"""Virtual API keys of the LLM gateway (platform table, not merchant-visible)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, String, Text, false, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base


class ApiKey(Base):
    """A key is shown once; only its prefix (for lookup) and hash are stored."""

    __tablename__ = "api_keys"
    __table_args__ = (Index("ix_api_keys_tenant", "tenant_id"),)

    key_id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    prefix: Mapped[str] = mapped_column(String(32), unique=True)
    key_hash: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(Text)
    tenant_id: Mapped[str] = mapped_column(String(64))
    role: Mapped[str] = mapped_column(String(32), server_default="caller")
    scopes: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    limits: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")
    cache_enabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    expires_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]
    rotated_from: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("api_keys.key_id"))
    created_at: Mapped[datetime] = mapped_column(server_default=func.now())
    last_used_at: Mapped[datetime | None]
