"""Work queues written by loaders in the same transaction as the data they describe."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, String, func
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base


class MetricRefresh(Base):
    """A merchant-local day whose aggregates must be recomputed.

    Loaders insert the old and the new day of every transaction they change;
    the aggregate step recomputes and deletes these rows in one transaction,
    so a crash anywhere leaves the work queued, never lost or half-done.
    """

    __tablename__ = "metric_refresh_queue"

    merchant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    queued_at: Mapped[datetime] = mapped_column(server_default=func.now())
