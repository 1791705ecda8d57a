"""No foreign keys on the metric tables (daily, hourly, per-product).

They are rewritten in bulk by the aggregate step from transactions that only
hold known merchants; per-row RI checks cost about a quarter of a full refresh.
Erasing a merchant deletes from every merchant-scoped table explicitly.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-22 07:21:25.360878
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_constraint(op.f('fk_daily_metrics_merchant_id_merchants'), 'daily_metrics', type_='foreignkey')
    op.drop_constraint(op.f('fk_daily_product_metrics_merchant_id_merchants'), 'daily_product_metrics', type_='foreignkey')
    op.drop_constraint(op.f('fk_hourly_metrics_merchant_id_merchants'), 'hourly_metrics', type_='foreignkey')


def downgrade() -> None:
    op.create_foreign_key(op.f('fk_hourly_metrics_merchant_id_merchants'), 'hourly_metrics', 'merchants', ['merchant_id'], ['merchant_id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_daily_product_metrics_merchant_id_merchants'), 'daily_product_metrics', 'merchants', ['merchant_id'], ['merchant_id'], ondelete='CASCADE')
    op.create_foreign_key(op.f('fk_daily_metrics_merchant_id_merchants'), 'daily_metrics', 'merchants', ['merchant_id'], ['merchant_id'], ondelete='CASCADE')
