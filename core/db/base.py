"""Declarative base, naming conventions and column helpers shared by all models."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Stable constraint names so Alembic migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Base class of every ORM model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: DateTime(timezone=True)}


def created_at_column() -> Mapped[datetime]:
    """A timezone-aware ``created_at`` set by the database."""
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


# Merchant-scoped tables: row-level security keyed on ``merchant_id`` is
# enabled and forced on each of these by the migrations. Tests check that every
# table with a ``merchant_id`` column is either here or in PLATFORM_TABLES.
MERCHANT_SCOPED_TABLES: tuple[str, ...] = (
    "merchants",
    "products",
    "transactions",
    "transaction_items",
    "reviews",
    "attachments",
    "text_chunks",
    "daily_metrics",
    "hourly_metrics",
    "daily_product_metrics",
    "insights",
    "conversations",
    "conversation_messages",
    "notifications",
    "notification_outbox",
    "webhook_endpoints",
)

# Platform tables: read and written by the gateway, ETL and operators only.
# The merchant-facing app role has no privileges on them at all.
PLATFORM_TABLES: tuple[str, ...] = (
    "api_keys",
    "usage_records",
    "ingestion_runs",
    "ingestion_files",
    "quarantined_rows",
    "metric_refresh_queue",
)

# Group role that merchant-facing login roles are members of. It owns nothing
# and has no BYPASSRLS, so row-level security always applies to it.
APP_GROUP_ROLE = "copilot_app"
