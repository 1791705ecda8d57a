"""Migrations go up and down cleanly and agree with the models."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, pool, text

import core.models  # noqa: F401
from core.config import DatabaseSettings
from core.db import Base
from core.db.engine import normalize_url
from core.db.migrate import current_revision, downgrade, head_revision, migrate, upgrade
from tests.conftest import create_database, drop_database


@pytest.fixture
def scratch_url(pg_server_url: str) -> Iterator[str]:
    name = f"copilot_mig_{uuid.uuid4().hex[:8]}"
    yield create_database(pg_server_url, name)
    drop_database(pg_server_url, name)


def _tables(url: str) -> set[str]:
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(scratch_url: str, db_settings: DatabaseSettings) -> None:
    assert migrate(scratch_url, db_settings) == head_revision()
    assert _tables(scratch_url) == set(Base.metadata.tables)

    downgrade(scratch_url, "base")
    assert _tables(scratch_url) == set()

    upgrade(scratch_url)
    assert _tables(scratch_url) == set(Base.metadata.tables)
    # Re-running is a no-op, not an error.
    assert migrate(scratch_url, db_settings) == head_revision()


def test_models_match_migrations(database_url: str) -> None:
    engine = create_engine(normalize_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            assert current_revision(engine) == head_revision()
    finally:
        engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_vector_extension_and_hnsw_index(database_url: str) -> None:
    engine = create_engine(normalize_url(database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT extversion FROM pg_extension WHERE extname='vector'")).scalar()
            indexdef = conn.execute(
                text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_text_chunks_embedding_hnsw'")
            ).scalar_one()
    finally:
        engine.dispose()
    assert "hnsw" in indexdef and "vector_cosine_ops" in indexdef
