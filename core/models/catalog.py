"""Products a merchant sells."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, CheckConstraint, Date, ForeignKey, Index, String, Text, func, text, true
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base
from core.models._types import Currency, Money


class Product(Base):
    """A catalog entry, unique per merchant."""

    __tablename__ = "products"
    __table_args__ = (
        CheckConstraint("price_minor >= 0", name="price_non_negative"),
        Index("ix_products_text_dirty", "merchant_id", postgresql_where=text("text_dirty")),
    )

    merchant_id: Mapped[str] = mapped_column(
        String(64), ForeignKey("merchants.merchant_id", ondelete="CASCADE"), primary_key=True
    )
    product_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str]
    category: Mapped[str | None] = mapped_column(String(128))
    price_minor: Mapped[Money]
    currency: Mapped[Currency]
    description: Mapped[str | None] = mapped_column(Text)
    active: Mapped[bool] = mapped_column(Boolean, server_default=true())
    updated_at: Mapped[datetime | None]
    source_partition: Mapped[date | None] = mapped_column(Date)
    # Set by the loader when the searchable text changed; cleared by text extraction.
    text_dirty: Mapped[bool] = mapped_column(Boolean, server_default=true())
    loaded_at: Mapped[datetime] = mapped_column(server_default=func.now())
