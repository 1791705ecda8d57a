"""Engines for the two roles: the owner (migrations, batch ETL) and the app.

One driver, psycopg 3, for sync and async. URLs are normalised so a plain
``postgresql://`` URL (as printed by ``copilot status`` or given by a managed
provider) works everywhere.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from core.config import DatabaseSettings


def normalize_url(url: str | URL) -> URL:
    """Return ``url`` with the psycopg 3 driver selected."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2", "postgresql+asyncpg"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise ValueError(f"unsupported database URL scheme {parsed.drivername!r}: use postgresql://")
    return parsed


def app_url(admin_url: str | URL, settings: DatabaseSettings) -> URL:
    """The URL the merchant-facing app role connects with.

    ``settings.app_url`` wins when given; otherwise it is the owner URL with the
    app login role's user name and password.
    """
    if settings.app_url is not None:
        return normalize_url(settings.app_url.get_secret_value())
    return normalize_url(admin_url).set(username=settings.app_user, password=settings.app_password.get_secret_value())


def _connect_args(settings: DatabaseSettings) -> dict[str, Any]:
    args: dict[str, Any] = {"connect_timeout": settings.connect_timeout_s}
    if settings.statement_timeout_ms:
        args["options"] = f"-c statement_timeout={settings.statement_timeout_ms}"
    return args


def create_sync_engine(url: str | URL, settings: DatabaseSettings, **kwargs: Any) -> Engine:
    """A pooled sync engine (batch path, CLI, Celery)."""
    return create_engine(
        normalize_url(url),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=True,
        echo=settings.echo,
        connect_args=_connect_args(settings),
        **kwargs,
    )


def create_async_db_engine(url: str | URL, settings: DatabaseSettings, **kwargs: Any) -> AsyncEngine:
    """A pooled async engine (request path)."""
    return create_async_engine(
        normalize_url(url),
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_pre_ping=True,
        echo=settings.echo,
        connect_args=_connect_args(settings),
        **kwargs,
    )
