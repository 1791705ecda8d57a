"""Fixtures for pipeline tests that commit: a context on the session database, truncated after each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from core.config import DatabaseSettings, Settings
from core.db import Database
from pipelines.context import PipelineContext
from tests.conftest import TEST_APP_USER

ALL_TABLES = (
    "merchants", "transactions", "transaction_items", "ingestion_runs", "metric_refresh_queue", "notification_outbox", "text_chunks",
    "usage_records", "api_keys",
)  # fmt: skip


@pytest.fixture
def ctx(database_url: str, admin_engine: Engine) -> Iterator[PipelineContext]:
    settings = Settings(database=DatabaseSettings(app_user=TEST_APP_USER, pool_size=2))
    context = PipelineContext(settings=settings, database=Database(database_url, settings.database))
    yield context
    context.close()
    with admin_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(ALL_TABLES)} CASCADE"))
