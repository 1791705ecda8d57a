"""Merchants: the tenant of every other merchant-scoped row."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, String, func
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base
from core.models._types import Currency


class Merchant(Base):
    """A merchant as exported in the ``merchants`` dataset."""

    __tablename__ = "merchants"
    __table_args__ = (
        CheckConstraint("char_length(country) = 2", name="country_iso2"),
        CheckConstraint("char_length(currency) = 3", name="currency_iso3"),
    )

    merchant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str]
    category: Mapped[str] = mapped_column(String(64))
    country: Mapped[str] = mapped_column(String(2))
    currency: Mapped[Currency]
    timezone: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime | None]
    # Partition the current version came from: "latest partition wins" when
    # the export carries no updated_at.
    source_partition: Mapped[date | None] = mapped_column(Date)
    loaded_at: Mapped[datetime] = mapped_column(server_default=func.now())
