"""Ingestion work queues: days whose metrics need recomputing, text that needs extracting.

metric_refresh_queue is a platform table (no grant to the app role).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22 06:04:32.108661
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('metric_refresh_queue',
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('queued_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('merchant_id', 'day', name=op.f('pk_metric_refresh_queue'))
    )
    op.create_index('ix_attachments_extraction_pending', 'attachments', ['merchant_id'], unique=False, postgresql_where=sa.text("extraction_status = 'pending'"))
    op.add_column('products', sa.Column('text_dirty', sa.Boolean(), server_default=sa.text('true'), nullable=False))
    op.create_index('ix_products_text_dirty', 'products', ['merchant_id'], unique=False, postgresql_where=sa.text('text_dirty'))
    op.add_column('reviews', sa.Column('text_dirty', sa.Boolean(), server_default=sa.text('true'), nullable=False))
    op.create_index('ix_reviews_text_dirty', 'reviews', ['merchant_id'], unique=False, postgresql_where=sa.text('text_dirty'))


def downgrade() -> None:
    op.drop_index('ix_reviews_text_dirty', table_name='reviews', postgresql_where=sa.text('text_dirty'))
    op.drop_column('reviews', 'text_dirty')
    op.drop_index('ix_products_text_dirty', table_name='products', postgresql_where=sa.text('text_dirty'))
    op.drop_column('products', 'text_dirty')
    op.drop_index('ix_attachments_extraction_pending', table_name='attachments', postgresql_where=sa.text("extraction_status = 'pending'"))
    op.drop_table('metric_refresh_queue')
