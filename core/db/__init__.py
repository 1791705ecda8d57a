"""Database access: engines, tenant-scoped sessions, the declarative base."""

from core.db.base import APP_GROUP_ROLE, MERCHANT_SCOPED_TABLES, PLATFORM_TABLES, Base
from core.db.database import Database
from core.db.engine import app_url, create_async_db_engine, create_sync_engine, normalize_url
from core.db.session import (
    TenantSession,
    async_session_scope,
    make_async_sessionmaker,
    make_sessionmaker,
    session_scope,
)

__all__ = [
    "APP_GROUP_ROLE",
    "MERCHANT_SCOPED_TABLES",
    "PLATFORM_TABLES",
    "Base",
    "Database",
    "TenantSession",
    "app_url",
    "async_session_scope",
    "create_async_db_engine",
    "create_sync_engine",
    "make_async_sessionmaker",
    "make_sessionmaker",
    "normalize_url",
    "session_scope",
]
