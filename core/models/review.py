"""Customer reviews (untrusted text)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, CheckConstraint, Date, ForeignKey, Index, SmallInteger, String, Text, func, text, true
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base


class Review(Base):
    """A rating with optional free text; the text is data, never instructions."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),
        Index("ix_reviews_merchant_created", "merchant_id", "created_at"),
        Index("ix_reviews_text_dirty", "merchant_id", postgresql_where=text("text_dirty")),
    )

    merchant_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("merchants.merchant_id", ondelete="CASCADE"), primary_key=True
    )
    review_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    created_at: Mapped[datetime]
    rating: Mapped[int] = mapped_column(SmallInteger)
    text: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(String(64))
    source_partition: Mapped[date | None] = mapped_column(Date)
    # Set by the loader when the searchable text changed; cleared by text extraction.
    text_dirty: Mapped[bool] = mapped_column(Boolean, server_default=true())
    loaded_at: Mapped[datetime] = mapped_column(server_default=func.now())
