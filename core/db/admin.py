"""Creating and dropping whole databases on a server (tests, benchmarks, tooling)."""

from __future__ import annotations

from sqlalchemy import create_engine, pool, text
from sqlalchemy.engine import URL

from core.db.engine import normalize_url


def create_database(server_url: str | URL, name: str) -> str:
    """(Re)create database ``name`` on the server of ``server_url``; return its URL.

    Args:
        server_url: A URL of any database on the server, for a role that may create databases.
        name: The database to create; an existing one of that name is dropped first.
    """
    engine = create_engine(normalize_url(server_url), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    quoted = engine.dialect.identifier_preparer.quote(name)
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {quoted}"))
    engine.dispose()
    return normalize_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str | URL, name: str) -> None:
    """Drop database ``name`` (disconnecting its sessions) if it exists."""
    engine = create_engine(normalize_url(server_url), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    quoted = engine.dialect.identifier_preparer.quote(name)
    with engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {quoted} WITH (FORCE)"))
    engine.dispose()
