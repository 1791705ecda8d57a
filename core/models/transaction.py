"""Card and cash transactions with their line items."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import CheckConstraint, Date, Index, Integer, String, func, text
from sqlalchemy.orm import Mapped, mapped_column

from core.db.base import Base
from core.models._types import Currency, Money, check_in

TRANSACTION_TYPES = ("PAYMENT", "REFUND", "CHARGEBACK")
TRANSACTION_STATUSES = ("SUCCESSFUL", "FAILED", "CANCELLED")
PAYMENT_METHODS = ("CARD", "CONTACTLESS", "WALLET", "CASH", "QR", "OTHER")


class Transaction(Base):
    """One transaction; ``amount_minor`` is positive and the sign comes from ``type``."""

    __tablename__ = "transactions"
    __table_args__ = (
        CheckConstraint(check_in("type", TRANSACTION_TYPES), name="type_valid"),
        CheckConstraint(check_in("status", TRANSACTION_STATUSES), name="status_valid"),
        CheckConstraint(check_in("payment_method", PAYMENT_METHODS), name="payment_method_valid"),
        CheckConstraint("amount_minor > 0", name="amount_positive"),
        CheckConstraint("tip_minor >= 0 AND tip_minor <= amount_minor", name="tip_within_amount"),
        # Every metric query is "one merchant, a time range": this index serves
        # them at 10M+ rows; INCLUDE keeps the aggregate scans index-only.
        Index(
            "ix_transactions_merchant_occurred",
            "merchant_id",
            "occurred_at",
            postgresql_include=["type", "status", "amount_minor", "tip_minor"],
        ),
        Index(
            "ix_transactions_merchant_customer",
            "merchant_id",
            "customer_id",
            postgresql_where=text("customer_id IS NOT NULL"),
        ),
        Index("ix_transactions_refund_of", "refund_of", postgresql_where=text("refund_of IS NOT NULL")),
    )

    transaction_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    # No foreign keys on the two bulk-loaded fact tables: per-row RI triggers
    # cost more than the rest of the merge. The loader guarantees both
    # references (unknown merchants are quarantined; items are written only
    # for transactions upserted in the same transaction).
    merchant_id: Mapped[str] = mapped_column(String(64))
    occurred_at: Mapped[datetime]
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    amount_minor: Mapped[Money]
    tip_minor: Mapped[Money]
    currency: Mapped[Currency]
    payment_method: Mapped[str] = mapped_column(String(16))
    card_scheme: Mapped[str | None] = mapped_column(String(32))
    customer_id: Mapped[str | None] = mapped_column(String(128))
    location_id: Mapped[str | None] = mapped_column(String(128))
    refund_of: Mapped[str | None] = mapped_column(String(128))
    updated_at: Mapped[datetime | None]
    source_partition: Mapped[date | None] = mapped_column(Date)
    loaded_at: Mapped[datetime] = mapped_column(server_default=func.now())


class TransactionItem(Base):
    """A line of a transaction's ``items``."""

    __tablename__ = "transaction_items"
    __table_args__ = (
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("unit_price_minor >= 0", name="unit_price_non_negative"),
        # No index besides the primary key: every reader reaches items through
        # their transaction, and each extra index slows the bulk load.
    )

    transaction_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    line_no: Mapped[int] = mapped_column(Integer, primary_key=True)
    merchant_id: Mapped[str] = mapped_column(String(64))
    product_id: Mapped[str] = mapped_column(String(128))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price_minor: Mapped[Money]
