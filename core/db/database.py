"""One object holding both engines of a process, created at the entrypoint."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from core.config import DatabaseSettings
from core.db.engine import app_url, create_sync_engine, normalize_url
from core.db.session import TenantSession, make_sessionmaker, session_scope
from core.errors import ServiceUnavailableError


class Database:
    """The owner engine (migrations, ETL) and the RLS-bound app engine.

    Engines are created lazily, so a process that only needs one of them never
    opens the other's pool.
    """

    def __init__(self, admin_url: str | URL, settings: DatabaseSettings) -> None:
        self.settings = settings
        self.admin_url = normalize_url(admin_url)
        self.app_url = app_url(self.admin_url, settings)

    @cached_property
    def admin_engine(self) -> Engine:
        """Engine of the schema owner; bypasses no policy it does not own."""
        return create_sync_engine(self.admin_url, self.settings)

    @cached_property
    def app_engine(self) -> Engine:
        """Engine of the merchant-facing login role; RLS always applies."""
        return create_sync_engine(self.app_url, self.settings)

    @cached_property
    def admin_sessions(self) -> sessionmaker[TenantSession]:
        """Session factory on the owner engine."""
        return make_sessionmaker(self.admin_engine)

    @cached_property
    def app_sessions(self) -> sessionmaker[TenantSession]:
        """Session factory on the app engine."""
        return make_sessionmaker(self.app_engine)

    @contextmanager
    def merchant_session(self, merchant_id: str) -> Iterator[TenantSession]:
        """A unit of work as the app role, scoped to one merchant."""
        with session_scope(self.app_sessions, merchant_id) as session:
            yield session

    def check(self) -> None:
        """Raise a one-line error when the owner connection cannot be made."""
        try:
            with self.admin_engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except OperationalError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
            raise ServiceUnavailableError(
                f"cannot reach PostgreSQL at {self.admin_url.render_as_string(hide_password=True)}: {reason}"
            ) from exc

    def dispose(self) -> None:
        """Close every pooled connection."""
        for name in ("admin_engine", "app_engine"):
            engine = self.__dict__.pop(name, None)
            if engine is not None:
                engine.dispose()
