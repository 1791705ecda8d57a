"""Drop the unused (merchant_id, product_id) index on transaction_items.

Every reader reaches items through their transaction (the primary key
``(transaction_id, line_no)``): metric queries and aggregates filter
transactions by merchant and time, then join items. The second index was
never used by a plan, yet every loaded item paid for its upkeep (about a
third of the cost of inserting items).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 12:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op


revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index('ix_transaction_items_merchant_product', table_name='transaction_items')


def downgrade() -> None:
    op.create_index('ix_transaction_items_merchant_product', 'transaction_items', ['merchant_id', 'product_id'], unique=False)
