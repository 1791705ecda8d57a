"""Minimal valid rows for every table, keyed by merchant, in insert order."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, insert

import core.models  # noqa: F401
from core.config import EMBEDDING_DIM
from core.db.base import Base

T0 = datetime(2026, 3, 29, 9, 30, tzinfo=UTC)


def merchant_rows(merchant_id: str) -> dict[str, dict[str, Any]]:
    """One row per merchant-scoped table, all belonging to ``merchant_id``."""
    txn = f"{merchant_id}-T1"
    insight_id = uuid.uuid4()
    conversation_id = uuid.uuid4()
    return {
        "merchants": {
            "merchant_id": merchant_id, "name": f"Shop {merchant_id}", "category": "cafe",
            "country": "DE", "currency": "EUR", "timezone": "Europe/Berlin", "created_at": T0,
        },
        "products": {
            "merchant_id": merchant_id, "product_id": "P1", "name": "Flat white",
            "price_minor": 380, "currency": "EUR",
        },
        "transactions": {
            "transaction_id": txn, "merchant_id": merchant_id, "occurred_at": T0, "type": "PAYMENT",
            "status": "SUCCESSFUL", "amount_minor": 760, "tip_minor": 0, "currency": "EUR",
            "payment_method": "CARD",
        },
        "transaction_items": {
            "transaction_id": txn, "line_no": 1, "merchant_id": merchant_id, "product_id": "P1",
            "quantity": 2, "unit_price_minor": 380,
        },
        "reviews": {
            "merchant_id": merchant_id, "review_id": "R1", "created_at": T0, "rating": 5,
            "text": "Great coffee",
        },
        "attachments": {
            "merchant_id": merchant_id, "attachment_id": "A1", "created_at": T0, "kind": "image",
            "content_type": "image/png", "path": f"attachments/dt=2026-03-29/{merchant_id}/A1.png",
        },
        "text_chunks": {
            "merchant_id": merchant_id, "source_type": "review", "source_id": "R1", "chunk_index": 0,
            "content": "Great coffee", "content_sha256": "0" * 64, "embedding": [0.1] * EMBEDDING_DIM,
        },
        "daily_metrics": {"merchant_id": merchant_id, "day": date(2026, 3, 29), "currency": "EUR"},
        "hourly_metrics": {"merchant_id": merchant_id, "day": date(2026, 3, 29), "hour": 9, "currency": "EUR"},
        "daily_product_metrics": {
            "merchant_id": merchant_id, "day": date(2026, 3, 29), "product_id": "P1", "currency": "EUR",
        },
        "insights": {
            "insight_id": insight_id, "merchant_id": merchant_id, "kind": "drop", "metric": "net_sales",
            "direction": "down", "period_start": date(2026, 3, 29), "period_end": date(2026, 3, 29),
            "as_of": date(2026, 3, 30), "impact_minor": 1000, "confidence": 0.9, "score": 1.0,
            "title": "Sales fell", "body": "Sales fell.", "dedup_key": "drop:2026-03-29",
        },
        "conversations": {"conversation_id": conversation_id, "merchant_id": merchant_id},
        "conversation_messages": {
            "conversation_id": conversation_id, "merchant_id": merchant_id, "role": "user",
            "content": "How were sales yesterday?",
        },
        "notifications": {"merchant_id": merchant_id, "insight_id": insight_id, "channel": "feed"},
        "notification_outbox": {
            "merchant_id": merchant_id, "event_type": "insight.created",
            "idempotency_key": f"{merchant_id}:{insight_id}",
        },
        "webhook_endpoints": {
            "merchant_id": merchant_id, "url": "https://example.invalid/hook", "secret_encrypted": b"x",
        },
    }  # fmt: skip


def insert_merchant(conn: Connection, merchant_id: str) -> dict[str, dict[str, Any]]:
    """Insert one row per merchant-scoped table for ``merchant_id``."""
    rows = merchant_rows(merchant_id)
    for table_name, row in rows.items():
        conn.execute(insert(Base.metadata.tables[table_name]), [row])
    return rows
