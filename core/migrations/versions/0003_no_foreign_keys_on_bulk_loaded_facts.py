"""No foreign keys on the bulk-loaded fact tables (transactions, transaction_items).

Per-row referential-integrity triggers cost more than the rest of the merge at
millions of rows; the loader guarantees both references instead (unknown
merchants are quarantined, items are written only for upserted transactions).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 06:31:12.559126
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f('fk_transaction_items_transaction_id_transactions'), 'transaction_items', type_='foreignkey')
    op.drop_constraint(op.f('fk_transactions_merchant_id_merchants'), 'transactions', type_='foreignkey')


def downgrade() -> None:
    op.create_foreign_key(op.f('fk_transactions_merchant_id_merchants'), 'transactions', 'merchants', ['merchant_id'], ['merchant_id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_transaction_items_transaction_id_transactions'), 'transaction_items', 'transactions', ['transaction_id'], ['transaction_id'], ondelete='CASCADE')
