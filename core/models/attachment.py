"""Binary attachments (receipts, invoices, voice notes, documents) and their extraction state."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, ForeignKey, Index, String, Text, func, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base
from core.models._types import check_in

ATTACHMENT_KINDS = ("image", "audio", "document")
EXTRACTION_STATUSES = ("pending", "done", "failed", "skipped")


class Attachment(Base):
    """A manifest row plus what text extraction made of the binary."""

    __tablename__ = "attachments"
    __table_args__ = (
        CheckConstraint(check_in("kind", ATTACHMENT_KINDS), name="kind_valid"),
        CheckConstraint(check_in("extraction_status", EXTRACTION_STATUSES), name="extraction_status_valid"),
        Index("ix_attachments_merchant_created", "merchant_id", "created_at"),
        Index(
            "ix_attachments_extraction_pending",
            "merchant_id",
            postgresql_where=text("extraction_status = 'pending'"),
        ),
    )

    merchant_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("merchants.merchant_id", ondelete="CASCADE"), primary_key=True
    )
    attachment_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))
    content_type: Mapped[str] = mapped_column(String(128))
    path: Mapped[str] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    content_sha256: Mapped[str | None] = mapped_column(String(64))
    extraction_status: Mapped[str] = mapped_column(String(16), server_default="pending")
    extraction_detail: Mapped[str | None] = mapped_column(Text)
    extracted_at: Mapped[datetime | None]
    source_partition: Mapped[date | None] = mapped_column(Date)
    loaded_at: Mapped[datetime] = mapped_column(server_default=func.now())
