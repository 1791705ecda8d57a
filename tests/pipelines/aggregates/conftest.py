"""Fixtures for the aggregates: a database of their own and a scenario builder.

``refresh_pending`` drains the whole ``metric_refresh_queue`` and commits
batch by batch on its own connections, so these tests cannot share the
session database (or its rolled-back ``conn``) with other suites: they get a
freshly migrated database, emptied before each test. Rows are inserted
directly (SQLAlchemy Core), the way a loader would leave them, together with
the queue rows a loader writes.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from core.config import DatabaseSettings, Settings
from core.db import Database
from pipelines.context import PipelineContext
from tests.conftest import migrated_database
from tests.pipelines.aggregates.scenario import Scenario

FACT_TABLES = "merchants, transactions, transaction_items, daily_metrics, hourly_metrics, daily_product_metrics"


@pytest.fixture(scope="session")
def aggregates_database_url(pg_server_url: str, db_settings: DatabaseSettings) -> Iterator[str]:
    with migrated_database(pg_server_url, db_settings, "copilot_agg") as url:
        yield url


@pytest.fixture
def agg_db(aggregates_database_url: str, db_settings: DatabaseSettings) -> Iterator[Database]:
    database = Database(aggregates_database_url, db_settings)
    with database.admin_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {FACT_TABLES}, metric_refresh_queue CASCADE"))
    yield database
    database.dispose()


@pytest.fixture
def ctx(agg_db: Database) -> PipelineContext:
    return PipelineContext(settings=Settings(), database=agg_db)


@pytest.fixture
def engine(agg_db: Database) -> Engine:
    return agg_db.admin_engine


@pytest.fixture
def scenario(engine: Engine) -> Scenario:
    return Scenario(engine)
