"""Initial schema: facts, aggregates, text chunks, insights, delivery, gateway and ingestion tables.

Every merchant-scoped table gets a FORCE'd row-level-security policy; platform
tables get no grant to the app role at all.

Revision ID: 0001
Revises: 
Create Date: 2026-11-22 05:54:41.180463
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import pgvector.sqlalchemy
from core.migrations import tenancy

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen copy: later revisions add their own tables, this one must not change.
MERCHANT_SCOPED_TABLES = (
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


def upgrade() -> None:
    tenancy.create_extensions()
    tenancy.create_app_group_role()
    op.create_table('api_keys',
    sa.Column('key_id', sa.Uuid(), nullable=False),
    sa.Column('prefix', sa.String(length=32), nullable=False),
    sa.Column('key_hash', sa.String(length=128), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=32), server_default='caller', nullable=False),
    sa.Column('scopes', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('limits', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('cache_enabled', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rotated_from', sa.Uuid(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['rotated_from'], ['api_keys.key_id'], name=op.f('fk_api_keys_rotated_from_api_keys')),
    sa.PrimaryKeyConstraint('key_id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_index('ix_api_keys_tenant', 'api_keys', ['tenant_id'], unique=False)
    op.create_table('ingestion_runs',
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('root', sa.Text(), nullable=False),
    sa.Column('logical_date', sa.Date(), nullable=True),
    sa.Column('trigger', sa.String(length=32), server_default='cli', nullable=False),
    sa.Column('status', sa.String(length=16), server_default='running', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('stats', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('running', 'succeeded', 'failed', 'partial')", name=op.f('ck_ingestion_runs_status_valid')),
    sa.PrimaryKeyConstraint('run_id', name=op.f('pk_ingestion_runs'))
    )
    op.create_table('merchants',
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=False),
    sa.Column('country', sa.String(length=2), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source_partition', sa.Date(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('char_length(country) = 2', name=op.f('ck_merchants_country_iso2')),
    sa.CheckConstraint('char_length(currency) = 3', name=op.f('ck_merchants_currency_iso3')),
    sa.PrimaryKeyConstraint('merchant_id', name=op.f('pk_merchants'))
    )
    op.create_table('notification_outbox',
    sa.Column('outbox_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=256), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('available_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('dispatched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('outbox_id', name=op.f('pk_notification_outbox'))
    )
    op.create_index('ix_notification_outbox_pending', 'notification_outbox', ['available_at'], unique=False, postgresql_where=sa.text('dispatched_at IS NULL'))
    op.create_index('uq_notification_outbox_idempotency_key', 'notification_outbox', ['idempotency_key'], unique=True)
    op.create_table('text_chunks',
    sa.Column('chunk_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('source_type', sa.String(length=16), nullable=False),
    sa.Column('source_id', sa.String(length=128), nullable=False),
    sa.Column('chunk_index', sa.Integer(), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=False),
    sa.Column('language', sa.String(length=16), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('embedding', pgvector.sqlalchemy.vector.VECTOR(dim=384), nullable=True),
    sa.Column('embedding_model', sa.String(length=128), nullable=True),
    sa.Column('embedded_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("source_type IN ('review', 'product', 'attachment', 'note')", name=op.f('ck_text_chunks_source_type_valid')),
    sa.PrimaryKeyConstraint('chunk_id', name=op.f('pk_text_chunks')),
    sa.UniqueConstraint('merchant_id', 'source_type', 'source_id', 'chunk_index', name=op.f('uq_text_chunks_merchant_id_source_type_source_id_chunk_index'))
    )
    op.create_index('ix_text_chunks_embedding_hnsw', 'text_chunks', ['embedding'], unique=False, postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'embedding': 'vector_cosine_ops'})
    op.create_index('ix_text_chunks_merchant_source', 'text_chunks', ['merchant_id', 'source_type', 'created_at'], unique=False)
    op.create_table('usage_records',
    sa.Column('usage_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('request_id', sa.Uuid(), nullable=False),
    sa.Column('key_id', sa.Uuid(), nullable=True),
    sa.Column('tenant_id', sa.String(length=64), nullable=True),
    sa.Column('merchant_id', sa.String(length=64), nullable=True),
    sa.Column('endpoint', sa.String(length=64), nullable=False),
    sa.Column('model', sa.String(length=128), nullable=False),
    sa.Column('deployment', sa.String(length=128), nullable=True),
    sa.Column('prompt_tokens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('completion_tokens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('cost_micros_usd', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('latency_ms', sa.Integer(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('cache_hit', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('stream', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('usage_id', name=op.f('pk_usage_records')),
    sa.UniqueConstraint('request_id', name=op.f('uq_usage_records_request_id'))
    )
    op.create_index('ix_usage_records_key_created', 'usage_records', ['key_id', 'created_at'], unique=False)
    op.create_index('ix_usage_records_merchant_created', 'usage_records', ['merchant_id', 'created_at'], unique=False)
    op.create_index('ix_usage_records_tenant_created', 'usage_records', ['tenant_id', 'created_at'], unique=False)
    op.create_table('attachments',
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('attachment_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('content_type', sa.String(length=128), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('content_sha256', sa.String(length=64), nullable=True),
    sa.Column('extraction_status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('extraction_detail', sa.Text(), nullable=True),
    sa.Column('extracted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source_partition', sa.Date(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("extraction_status IN ('pending', 'done', 'failed', 'skipped')", name=op.f('ck_attachments_extraction_status_valid')),
    sa.CheckConstraint("kind IN ('image', 'audio', 'document')", name=op.f('ck_attachments_kind_valid')),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_attachments_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('merchant_id', 'attachment_id', name=op.f('pk_attachments'))
    )
    op.create_index('ix_attachments_merchant_created', 'attachments', ['merchant_id', 'created_at'], unique=False)
    op.create_table('conversations',
    sa.Column('conversation_id', sa.Uuid(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('title', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_conversations_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('conversation_id', name=op.f('pk_conversations'))
    )
    op.create_index('ix_conversations_merchant_updated', 'conversations', ['merchant_id', 'updated_at'], unique=False)
    op.create_table('daily_metrics',
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('payment_methods', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('gross_sales_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('refunds_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('net_sales_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('transactions', sa.Integer(), server_default='0', nullable=False),
    sa.Column('tips_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('units_sold', sa.Integer(), server_default='0', nullable=False),
    sa.Column('unique_customers', sa.Integer(), server_default='0', nullable=False),
    sa.Column('refund_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_daily_metrics_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('merchant_id', 'day', name=op.f('pk_daily_metrics'))
    )
    op.create_table('daily_product_metrics',
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('product_id', sa.String(length=128), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('units_sold', sa.Integer(), server_default='0', nullable=False),
    sa.Column('gross_sales_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('transactions', sa.Integer(), server_default='0', nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_daily_product_metrics_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('merchant_id', 'day', 'product_id', name=op.f('pk_daily_product_metrics'))
    )
    op.create_table('hourly_metrics',
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('day', sa.Date(), nullable=False),
    sa.Column('hour', sa.SmallInteger(), nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('gross_sales_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('refunds_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('net_sales_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('transactions', sa.Integer(), server_default='0', nullable=False),
    sa.Column('tips_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('units_sold', sa.Integer(), server_default='0', nullable=False),
    sa.Column('unique_customers', sa.Integer(), server_default='0', nullable=False),
    sa.Column('refund_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('failed_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('computed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_hourly_metrics_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('merchant_id', 'day', 'hour', name=op.f('pk_hourly_metrics'))
    )
    op.create_table('ingestion_files',
    sa.Column('file_id', sa.Uuid(), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('dataset', sa.String(length=32), nullable=False),
    sa.Column('partition', sa.Date(), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('content_sha256', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=16), server_default='running', nullable=False),
    sa.Column('rows_read', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rows_loaded', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rows_quarantined', sa.Integer(), server_default='0', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status <> 'loaded' OR rows_read = rows_loaded + rows_quarantined", name=op.f('ck_ingestion_files_rows_balance')),
    sa.CheckConstraint("status IN ('running', 'loaded', 'failed')", name=op.f('ck_ingestion_files_status_valid')),
    sa.ForeignKeyConstraint(['run_id'], ['ingestion_runs.run_id'], name=op.f('fk_ingestion_files_run_id_ingestion_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('file_id', name=op.f('pk_ingestion_files'))
    )
    op.create_index('ix_ingestion_files_path', 'ingestion_files', ['dataset', 'path'], unique=False)
    op.create_index('ix_ingestion_files_run', 'ingestion_files', ['run_id'], unique=False)
    op.create_table('insights',
    sa.Column('insight_id', sa.Uuid(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('direction', sa.String(length=8), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('period_end', sa.Date(), nullable=False),
    sa.Column('as_of', sa.Date(), nullable=False),
    sa.Column('impact_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('confidence', sa.Float(), nullable=False),
    sa.Column('score', sa.Float(), nullable=False),
    sa.Column('title', sa.Text(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('facts', postgresql.JSONB(astext_type=sa.Text()), server_default='[]', nullable=False),
    sa.Column('evidence', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('dedup_key', sa.String(length=256), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='new', nullable=False),
    sa.Column('trace_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("direction IN ('up', 'down')", name=op.f('ck_insights_direction_valid')),
    sa.CheckConstraint("status IN ('new', 'delivered', 'dismissed', 'suppressed')", name=op.f('ck_insights_status_valid')),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_insights_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('insight_id', name=op.f('pk_insights')),
    sa.UniqueConstraint('merchant_id', 'dedup_key', name=op.f('uq_insights_merchant_id_dedup_key'))
    )
    op.create_index('ix_insights_merchant_created', 'insights', ['merchant_id', 'created_at'], unique=False)
    op.create_table('products',
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('product_id', sa.String(length=128), nullable=False),
    sa.Column('name', sa.String(), nullable=False),
    sa.Column('category', sa.String(length=128), nullable=True),
    sa.Column('price_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('active', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source_partition', sa.Date(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('price_minor >= 0', name=op.f('ck_products_price_non_negative')),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_products_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('merchant_id', 'product_id', name=op.f('pk_products'))
    )
    op.create_table('reviews',
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('review_id', sa.String(length=128), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rating', sa.SmallInteger(), nullable=False),
    sa.Column('text', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=64), nullable=True),
    sa.Column('source_partition', sa.Date(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint('rating BETWEEN 1 AND 5', name=op.f('ck_reviews_rating_range')),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_reviews_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('merchant_id', 'review_id', name=op.f('pk_reviews'))
    )
    op.create_index('ix_reviews_merchant_created', 'reviews', ['merchant_id', 'created_at'], unique=False)
    op.create_table('transactions',
    sa.Column('transaction_id', sa.String(length=128), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('amount_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('tip_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('currency', sa.String(length=3), nullable=False),
    sa.Column('payment_method', sa.String(length=16), nullable=False),
    sa.Column('card_scheme', sa.String(length=32), nullable=True),
    sa.Column('customer_id', sa.String(length=128), nullable=True),
    sa.Column('location_id', sa.String(length=128), nullable=True),
    sa.Column('refund_of', sa.String(length=128), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('source_partition', sa.Date(), nullable=True),
    sa.Column('loaded_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("payment_method IN ('CARD', 'CONTACTLESS', 'WALLET', 'CASH', 'QR', 'OTHER')", name=op.f('ck_transactions_payment_method_valid')),
    sa.CheckConstraint("status IN ('SUCCESSFUL', 'FAILED', 'CANCELLED')", name=op.f('ck_transactions_status_valid')),
    sa.CheckConstraint("type IN ('PAYMENT', 'REFUND', 'CHARGEBACK')", name=op.f('ck_transactions_type_valid')),
    sa.CheckConstraint('amount_minor > 0', name=op.f('ck_transactions_amount_positive')),
    sa.CheckConstraint('tip_minor >= 0 AND tip_minor <= amount_minor', name=op.f('ck_transactions_tip_within_amount')),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_transactions_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('transaction_id', name=op.f('pk_transactions'))
    )
    op.create_index('ix_transactions_merchant_customer', 'transactions', ['merchant_id', 'customer_id'], unique=False, postgresql_where=sa.text('customer_id IS NOT NULL'))
    op.create_index('ix_transactions_merchant_occurred', 'transactions', ['merchant_id', 'occurred_at'], unique=False, postgresql_include=['type', 'status', 'amount_minor', 'tip_minor'])
    op.create_index('ix_transactions_refund_of', 'transactions', ['refund_of'], unique=False, postgresql_where=sa.text('refund_of IS NOT NULL'))
    op.create_table('webhook_endpoints',
    sa.Column('endpoint_id', sa.Uuid(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('url', sa.Text(), nullable=False),
    sa.Column('secret_encrypted', sa.LargeBinary(), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('disabled_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_webhook_endpoints_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('endpoint_id', name=op.f('pk_webhook_endpoints'))
    )
    op.create_index(op.f('ix_webhook_endpoints_merchant_id'), 'webhook_endpoints', ['merchant_id'], unique=False)
    op.create_table('conversation_messages',
    sa.Column('message_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('conversation_id', sa.Uuid(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('content', sa.Text(), nullable=False),
    sa.Column('facts', postgresql.JSONB(astext_type=sa.Text()), server_default='[]', nullable=False),
    sa.Column('citations', postgresql.JSONB(astext_type=sa.Text()), server_default='[]', nullable=False),
    sa.Column('trace_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("role IN ('user', 'assistant')", name=op.f('ck_conversation_messages_role_valid')),
    sa.ForeignKeyConstraint(['conversation_id'], ['conversations.conversation_id'], name=op.f('fk_conversation_messages_conversation_id_conversations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('message_id', name=op.f('pk_conversation_messages'))
    )
    op.create_index('ix_conversation_messages_conversation', 'conversation_messages', ['conversation_id', 'message_id'], unique=False)
    op.create_table('notifications',
    sa.Column('notification_id', sa.Uuid(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('insight_id', sa.Uuid(), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='pending', nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), server_default='{}', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("channel IN ('webhook', 'push', 'feed')", name=op.f('ck_notifications_channel_valid')),
    sa.CheckConstraint("status IN ('pending', 'sent', 'failed', 'dead')", name=op.f('ck_notifications_status_valid')),
    sa.ForeignKeyConstraint(['insight_id'], ['insights.insight_id'], name=op.f('fk_notifications_insight_id_insights'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['merchant_id'], ['merchants.merchant_id'], name=op.f('fk_notifications_merchant_id_merchants'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('notification_id', name=op.f('pk_notifications'))
    )
    op.create_index('ix_notifications_merchant_created', 'notifications', ['merchant_id', 'created_at'], unique=False)
    op.create_table('quarantined_rows',
    sa.Column('quarantine_id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('run_id', sa.Uuid(), nullable=False),
    sa.Column('file_id', sa.Uuid(), nullable=False),
    sa.Column('dataset', sa.String(length=32), nullable=False),
    sa.Column('path', sa.Text(), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('raw_record', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['file_id'], ['ingestion_files.file_id'], name=op.f('fk_quarantined_rows_file_id_ingestion_files'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['run_id'], ['ingestion_runs.run_id'], name=op.f('fk_quarantined_rows_run_id_ingestion_runs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('quarantine_id', name=op.f('pk_quarantined_rows'))
    )
    op.create_index('ix_quarantined_rows_dataset_created', 'quarantined_rows', ['dataset', 'created_at'], unique=False)
    op.create_index('ix_quarantined_rows_file', 'quarantined_rows', ['file_id'], unique=False)
    op.create_table('transaction_items',
    sa.Column('transaction_id', sa.String(length=128), nullable=False),
    sa.Column('line_no', sa.Integer(), nullable=False),
    sa.Column('merchant_id', sa.String(length=64), nullable=False),
    sa.Column('product_id', sa.String(length=128), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('unit_price_minor', sa.BigInteger(), server_default='0', nullable=False),
    sa.CheckConstraint('quantity > 0', name=op.f('ck_transaction_items_quantity_positive')),
    sa.CheckConstraint('unit_price_minor >= 0', name=op.f('ck_transaction_items_unit_price_non_negative')),
    sa.ForeignKeyConstraint(['transaction_id'], ['transactions.transaction_id'], name=op.f('fk_transaction_items_transaction_id_transactions'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('transaction_id', 'line_no', name=op.f('pk_transaction_items'))
    )
    op.create_index('ix_transaction_items_merchant_product', 'transaction_items', ['merchant_id', 'product_id'], unique=False)
    for table in MERCHANT_SCOPED_TABLES:
        tenancy.enable_tenant_rls(table)
    tenancy.grant_sequences(MERCHANT_SCOPED_TABLES)


def downgrade() -> None:
    for table in MERCHANT_SCOPED_TABLES:
        tenancy.disable_tenant_rls(table)
    tenancy.revoke_schema_usage()
    op.drop_index('ix_transaction_items_merchant_product', table_name='transaction_items')
    op.drop_table('transaction_items')
    op.drop_index('ix_quarantined_rows_file', table_name='quarantined_rows')
    op.drop_index('ix_quarantined_rows_dataset_created', table_name='quarantined_rows')
    op.drop_table('quarantined_rows')
    op.drop_index('ix_notifications_merchant_created', table_name='notifications')
    op.drop_table('notifications')
    op.drop_index('ix_conversation_messages_conversation', table_name='conversation_messages')
    op.drop_table('conversation_messages')
    op.drop_index(op.f('ix_webhook_endpoints_merchant_id'), table_name='webhook_endpoints')
    op.drop_table('webhook_endpoints')
    op.drop_index('ix_transactions_refund_of', table_name='transactions', postgresql_where=sa.text('refund_of IS NOT NULL'))
    op.drop_index('ix_transactions_merchant_occurred', table_name='transactions', postgresql_include=['type', 'status', 'amount_minor', 'tip_minor'])
    op.drop_index('ix_transactions_merchant_customer', table_name='transactions', postgresql_where=sa.text('customer_id IS NOT NULL'))
    op.drop_table('transactions')
    op.drop_index('ix_reviews_merchant_created', table_name='reviews')
    op.drop_table('reviews')
    op.drop_table('products')
    op.drop_index('ix_insights_merchant_created', table_name='insights')
    op.drop_table('insights')
    op.drop_index('ix_ingestion_files_run', table_name='ingestion_files')
    op.drop_index('ix_ingestion_files_path', table_name='ingestion_files')
    op.drop_table('ingestion_files')
    op.drop_table('hourly_metrics')
    op.drop_table('daily_product_metrics')
    op.drop_table('daily_metrics')
    op.drop_index('ix_conversations_merchant_updated', table_name='conversations')
    op.drop_table('conversations')
    op.drop_index('ix_attachments_merchant_created', table_name='attachments')
    op.drop_table('attachments')
    op.drop_index('ix_usage_records_tenant_created', table_name='usage_records')
    op.drop_index('ix_usage_records_merchant_created', table_name='usage_records')
    op.drop_index('ix_usage_records_key_created', table_name='usage_records')
    op.drop_table('usage_records')
    op.drop_index('ix_text_chunks_merchant_source', table_name='text_chunks')
    op.drop_index('ix_text_chunks_embedding_hnsw', table_name='text_chunks', postgresql_using='hnsw', postgresql_with={'m': 16, 'ef_construction': 64}, postgresql_ops={'embedding': 'vector_cosine_ops'})
    op.drop_table('text_chunks')
    op.drop_index('uq_notification_outbox_idempotency_key', table_name='notification_outbox')
    op.drop_index('ix_notification_outbox_pending', table_name='notification_outbox', postgresql_where=sa.text('dispatched_at IS NULL'))
    op.drop_table('notification_outbox')
    op.drop_table('merchants')
    op.drop_table('ingestion_runs')
    op.drop_index('ix_api_keys_tenant', table_name='api_keys')
    op.drop_table('api_keys')
