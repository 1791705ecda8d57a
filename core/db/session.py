"""Sessions scoped to one merchant, and the transaction boundary helpers.

Tenant isolation lives in the database: every merchant-scoped table has a
FORCE'd row-level-security policy comparing ``merchant_id`` with the
transaction-local setting ``app.merchant_id``. A :class:`TenantSession` sets
that value at the start of *every* transaction it begins (``set_config(...,
true)``), so a pooled connection never carries one merchant's scope into the
next checkout, and a session with no merchant sees no rows at all.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

MERCHANT_SETTING = "app.merchant_id"
_SET_MERCHANT = text(f"SELECT set_config('{MERCHANT_SETTING}', :merchant_id, true)")


class TenantSession(Session):
    """A session whose transactions run with ``app.merchant_id`` set.

    The merchant comes from ``session.info["merchant_id"]``, fixed when the
    session is created (see :func:`merchant_session`); it never comes from
    request input parsed later.
    """


@event.listens_for(TenantSession, "after_begin")
def _scope_transaction(session: Session, transaction: SessionTransaction, connection: Connection) -> None:
    merchant_id = session.info.get("merchant_id")
    if merchant_id is not None:
        connection.execute(_SET_MERCHANT, {"merchant_id": str(merchant_id)})


def make_sessionmaker(engine: Engine) -> sessionmaker[TenantSession]:
    """A session factory whose sessions honour ``info["merchant_id"]``."""
    return sessionmaker(engine, class_=TenantSession, expire_on_commit=False)


def make_async_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """The async counterpart of :func:`make_sessionmaker`."""
    return async_sessionmaker(engine, sync_session_class=TenantSession, expire_on_commit=False)


@contextmanager
def session_scope(
    factory: sessionmaker[TenantSession], merchant_id: str | None = None, **info: Any
) -> Iterator[TenantSession]:
    """A unit of work: commit on success, roll back on error, always close.

    Args:
        factory: From :func:`make_sessionmaker`.
        merchant_id: The merchant every transaction of the session is scoped to.
        **info: Extra values stored in ``session.info``.
    """
    session = factory(info={"merchant_id": merchant_id, **info})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@asynccontextmanager
async def async_session_scope(
    factory: async_sessionmaker[AsyncSession], merchant_id: str | None = None, **info: Any
) -> AsyncIterator[AsyncSession]:
    """The async counterpart of :func:`session_scope`."""
    session = factory(info={"merchant_id": merchant_id, **info})
    try:
        yield session
        await session.commit()
    except BaseException:
        await session.rollback()
        raise
    finally:
        await session.close()


def current_merchant(connection: Connection) -> str | None:
    """The merchant the connection's current transaction is scoped to, if any."""
    value = connection.execute(text(f"SELECT NULLIF(current_setting('{MERCHANT_SETTING}', true), '')")).scalar_one()
    return str(value) if value is not None else None
