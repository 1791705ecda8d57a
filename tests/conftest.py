"""Shared fixtures: a real PostgreSQL with pgvector and a real Redis.

By default both are embedded servers started once per test session in a
temporary folder. Set ``COPILOT_TEST_DATABASE_URL`` (an owner/superuser URL)
and/or ``COPILOT_TEST_REDIS_URL`` to run against servers you manage instead.
Each session migrates a fresh database; each test runs inside a transaction
that is rolled back.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from sqlalchemy import Connection, Engine, create_engine, pool, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from core.config import DatabaseSettings
from core.db.admin import create_database, drop_database
from core.db.engine import normalize_url
from core.db.migrate import migrate
from core.embedded import EmbeddedPostgres, EmbeddedRedis

TEST_APP_USER = "copilot_api_test"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a PostgreSQL server (any database) we may create databases on."""
    external = os.environ.get("COPILOT_TEST_DATABASE_URL")
    if external:
        yield external
        return
    # Not pytest's tmp_path: pytest deletes old basetemp folders when another
    # session starts, which would pull the data folder from under a live server.
    folder = short_tmp("cptest-pg")
    server = EmbeddedPostgres(folder, database="postgres")
    url = server.start()
    yield url
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def db_settings() -> DatabaseSettings:
    return DatabaseSettings(app_user=TEST_APP_USER, pool_size=5)


@contextmanager
def migrated_database(server_url: str, settings: DatabaseSettings, prefix: str) -> Iterator[str]:
    """A fresh database on the test server, migrated to head, dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    url = create_database(server_url, name)
    try:
        migrate(url, settings)
        yield url
    finally:
        drop_database(server_url, name)


@pytest.fixture(scope="session")
def database_url(pg_server_url: str, db_settings: DatabaseSettings) -> Iterator[str]:
    """A freshly migrated database for this test session (owner URL)."""
    with migrated_database(pg_server_url, db_settings, "copilot_test") as url:
        yield url


@pytest.fixture(scope="session")
def admin_engine(database_url: str) -> Iterator[Engine]:
    engine = create_engine(normalize_url(database_url), poolclass=pool.NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def conn(admin_engine: Engine) -> Iterator[Connection]:
    """An owner connection inside a transaction rolled back after the test."""
    with admin_engine.connect() as connection:
        transaction = connection.begin()
        try:
            yield connection
        finally:
            transaction.rollback()


@pytest.fixture
def session(conn: Connection) -> Iterator[Session]:
    """An ORM session joined to :func:`conn`'s rolled-back transaction."""
    with Session(bind=conn, join_transaction_mode="create_savepoint") as orm_session:
        yield orm_session


def act_as_app(connection: Connection, merchant_id: str | None) -> None:
    """Switch the current transaction to the app login role, scoped to a merchant."""
    connection.execute(text(f"SET LOCAL ROLE {TEST_APP_USER}"))
    connection.execute(text("SELECT set_config('app.merchant_id', :m, true)"), {"m": merchant_id or ""})


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """URL of a real Redis server (embedded unless COPILOT_TEST_REDIS_URL is set)."""
    external = os.environ.get("COPILOT_TEST_REDIS_URL")
    if external:
        yield external
        return
    folder = short_tmp("cptest-redis")
    server = EmbeddedRedis(folder)
    url = server.start()
    yield url
    server.stop()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A client on a clean logical database, flushed after the test."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.flushdb()
    client.close()


def short_tmp(prefix: str) -> Path:
    """A short temporary folder (unix socket paths are limited to ~100 bytes)."""
    import tempfile

    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


__all__ = ["act_as_app", "create_database", "drop_database", "make_url", "short_tmp"]


# Shared dataset fixtures (imported last: they use migrated_database above).
from tests.datasets import metrics_db, metrics_landing, reference  # noqa: E402, F401
