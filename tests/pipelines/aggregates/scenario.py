"""Build merchants and transactions in the database, with the oracle's view of them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Engine, insert, text

import core.models  # noqa: F401  (registers every table)
from core.db import Base
from tests.oracle import Expected, Item, Merchant, Txn, actual_metrics, compute_metrics

TABLES = Base.metadata.tables

# What writers must run to queue a merchant-day (see pipelines.aggregates).
QUEUE_DAY = text(
    "INSERT INTO metric_refresh_queue (merchant_id, day) VALUES (:merchant_id, :day) "
    "ON CONFLICT (merchant_id, day) DO UPDATE SET queued_at = excluded.queued_at"
)


def ts(value: str) -> datetime:
    """An ISO 8601 timestamp with offset."""
    parsed = datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return parsed


@dataclass
class Scenario:
    """Merchants and transactions to insert, with the oracle's view of them.

    Amounts are minor units. ``items`` are ``(product_id, quantity, unit_price_minor)``.
    """

    engine: Engine
    merchants: dict[str, Merchant] = field(default_factory=dict)
    txns: dict[str, Txn] = field(default_factory=dict)
    _pending: list[Txn] = field(default_factory=list)
    _seq: int = 0

    def merchant(self, merchant_id: str, timezone: str, currency: str = "EUR") -> str:
        self.merchants[merchant_id] = Merchant(merchant_id, currency, timezone, {})
        with self.engine.begin() as conn:
            conn.execute(
                insert(TABLES["merchants"]),
                [{
                    "merchant_id": merchant_id, "name": f"Shop {merchant_id}", "category": "cafe",
                    "country": "DE", "currency": currency, "timezone": timezone,
                    "created_at": ts("2025-01-01T00:00:00+00:00"),
                }],
            )  # fmt: skip
        return merchant_id

    def txn(
        self,
        merchant_id: str,
        at: str,
        amount: int = 1000,
        *,
        type: str = "PAYMENT",
        status: str = "SUCCESSFUL",
        tip: int = 0,
        method: str = "CARD",
        customer: str | None = None,
        items: Iterable[tuple[str, int, int]] = (),
        refund_of: str | None = None,
        transaction_id: str | None = None,
    ) -> Txn:
        """Stage one transaction (written by :meth:`commit`)."""
        self._seq += 1
        t = Txn(
            transaction_id=transaction_id or f"{merchant_id}-T{self._seq:05d}", merchant_id=merchant_id,
            occurred_at=ts(at), type=type, status=status, amount_minor=amount, tip_minor=tip,
            currency=self.merchants[merchant_id].currency, payment_method=method, card_scheme=None,
            customer_id=customer, location_id=None, refund_of=refund_of,
            items=tuple(Item(p, q, u) for p, q, u in items), updated_at=None, partition=date(2026, 1, 1),
        )  # fmt: skip
        self._pending.append(t)
        return t

    def local_day(self, t: Txn) -> date:
        return t.occurred_at.astimezone(ZoneInfo(self.merchants[t.merchant_id].timezone)).date()

    def commit(self, *, queue: bool = True) -> set[tuple[str, date]]:
        """Insert the staged transactions and (like a loader) queue their local days."""
        pending, self._pending = self._pending, []
        days = {(t.merchant_id, self.local_day(t)) for t in pending}
        with self.engine.begin() as conn:
            if pending:
                conn.execute(insert(TABLES["transactions"]), [_txn_row(t) for t in pending])
                items = [_item_row(t, n, i) for t in pending for n, i in enumerate(t.items, start=1)]
                if items:
                    conn.execute(insert(TABLES["transaction_items"]), items)
            if queue:
                self.queue(days, conn=conn)
        self.txns.update((t.transaction_id, t) for t in pending)
        return days

    def queue(self, days: Iterable[tuple[str, date]], conn: Connection | None = None) -> None:
        """Queue merchant-days the way writers must (see pipelines.aggregates)."""
        rows = [{"merchant_id": m, "day": d} for m, d in days]
        if not rows:
            return
        if conn is not None:
            conn.execute(QUEUE_DAY, rows)
            return
        with self.engine.begin() as own:
            own.execute(QUEUE_DAY, rows)

    def update(self, t: Txn, **changes: Any) -> Txn:
        """Correct a stored transaction (as a re-delivery would) and queue its old and new day."""
        new = Txn(**{**t.__dict__, **changes})
        table = TABLES["transactions"]
        with self.engine.begin() as conn:
            conn.execute(table.update().where(table.c.transaction_id == t.transaction_id), changes)
            self.queue({(t.merchant_id, self.local_day(t)), (new.merchant_id, self.local_day(new))}, conn=conn)
        self.txns[t.transaction_id] = new
        return new

    def delete(self, t: Txn) -> None:
        """Remove a stored transaction and queue its day."""
        with self.engine.begin() as conn:
            conn.execute(text("DELETE FROM transaction_items WHERE transaction_id = :t"), {"t": t.transaction_id})
            conn.execute(text("DELETE FROM transactions WHERE transaction_id = :t"), {"t": t.transaction_id})
            self.queue({(t.merchant_id, self.local_day(t))}, conn=conn)
        del self.txns[t.transaction_id]

    def expected(self) -> Expected:
        return compute_metrics(self.merchants, self.txns.values())

    def actual(self) -> Expected:
        with self.engine.connect() as conn:
            return actual_metrics(conn)

    def queued(self) -> set[tuple[str, date]]:
        with self.engine.connect() as conn:
            return {
                (r.merchant_id, r.day) for r in conn.execute(text("SELECT merchant_id, day FROM metric_refresh_queue"))
            }


def _txn_row(t: Txn) -> dict[str, Any]:
    return {
        "transaction_id": t.transaction_id, "merchant_id": t.merchant_id, "occurred_at": t.occurred_at,
        "type": t.type, "status": t.status, "amount_minor": t.amount_minor, "tip_minor": t.tip_minor,
        "currency": t.currency, "payment_method": t.payment_method, "card_scheme": t.card_scheme,
        "customer_id": t.customer_id, "location_id": t.location_id, "refund_of": t.refund_of,
        "updated_at": t.updated_at, "source_partition": t.partition,
    }  # fmt: skip


def _item_row(t: Txn, line_no: int, item: Item) -> dict[str, Any]:
    return {
        "transaction_id": t.transaction_id, "line_no": line_no, "merchant_id": t.merchant_id,
        "product_id": item.product_id, "quantity": item.quantity, "unit_price_minor": item.unit_price_minor,
    }  # fmt: skip


def insert_facts(engine: Engine, merchants: Iterable[Merchant], txns: Iterable[Txn], batch: int = 5000) -> None:
    """Insert parsed landing facts (tests.oracle.read_facts) as a loader would store them."""
    txns = list(txns)
    with engine.begin() as conn:
        conn.execute(
            insert(TABLES["merchants"]),
            [{
                "merchant_id": m.merchant_id, "name": m.row.get("name") or m.merchant_id,
                "category": m.row.get("category") or "cafe", "country": m.row.get("country") or "DE",
                "currency": m.currency, "timezone": m.timezone, "created_at": ts("2025-01-01T00:00:00+00:00"),
            } for m in merchants],
        )  # fmt: skip
        for start in range(0, len(txns), batch):
            chunk = txns[start : start + batch]
            conn.execute(insert(TABLES["transactions"]), [_txn_row(t) for t in chunk])
            items = [_item_row(t, n, i) for t in chunk for n, i in enumerate(t.items, start=1)]
            if items:
                conn.execute(insert(TABLES["transaction_items"]), items)
