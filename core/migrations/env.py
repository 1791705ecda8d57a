"""Alembic environment: runs migrations on the owner connection.

The URL comes from ``config.attributes["url"]`` (set by :mod:`core.db.migrate`,
which the CLI uses) or, for the plain ``alembic`` command, from the settings.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

import core.models  # noqa: F401  (registers every table on Base.metadata)
from core.db.base import Base
from core.db.engine import normalize_url

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        from core.config import get_settings
        from core.embedded import resolve_services

        url = resolve_services(get_settings(), start=False, redis=False).database_url
    return normalize_url(url).render_as_string(hide_password=False)


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade --sql``)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run migrations in one transaction on a dedicated connection."""
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
