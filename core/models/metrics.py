"""Daily and hourly aggregates in the merchant's local time (see DATA_CONTRACT.md).

No foreign keys: these tables are rewritten in bulk by the aggregate step, whose
input (transactions) only holds known merchants; per-row RI checks cost about a
quarter of a full refresh.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, Integer, SmallInteger, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base
from core.models._types import Currency, Money


class _MetricColumns:
    """The contract's metrics, shared by the daily and hourly tables."""

    currency: Mapped[Currency]
    gross_sales_minor: Mapped[Money]
    refunds_minor: Mapped[Money]
    net_sales_minor: Mapped[Money]
    transactions: Mapped[int] = mapped_column(Integer, server_default="0")
    tips_minor: Mapped[Money]
    units_sold: Mapped[int] = mapped_column(Integer, server_default="0")
    unique_customers: Mapped[int] = mapped_column(Integer, server_default="0")
    refund_count: Mapped[int] = mapped_column(Integer, server_default="0")
    failed_count: Mapped[int] = mapped_column(Integer, server_default="0")
    computed_at: Mapped[datetime] = mapped_column(server_default=func.now())


class DailyMetric(_MetricColumns, Base):
    """One merchant-local day."""

    __tablename__ = "daily_metrics"

    merchant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    # {"CARD": {"transactions": n, "gross_sales_minor": m}, ...}
    payment_methods: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default="{}")


class HourlyMetric(_MetricColumns, Base):
    """One merchant-local hour of a local day (the repeated DST hour is merged)."""

    __tablename__ = "hourly_metrics"

    merchant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    hour: Mapped[int] = mapped_column(SmallInteger, primary_key=True)


class DailyProductMetric(Base):
    """Units and sales of one product on one merchant-local day."""

    __tablename__ = "daily_product_metrics"

    merchant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    product_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    currency: Mapped[Currency]
    units_sold: Mapped[int] = mapped_column(Integer, server_default="0")
    gross_sales_minor: Mapped[Money]
    transactions: Mapped[int] = mapped_column(Integer, server_default="0")
    computed_at: Mapped[datetime] = mapped_column(server_default=func.now())
