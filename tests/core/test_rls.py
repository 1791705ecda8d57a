"""Tenant isolation is enforced by PostgreSQL, not by our queries."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, Engine, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, ProgrammingError

from core.config import DatabaseSettings
from core.db import APP_GROUP_ROLE, MERCHANT_SCOPED_TABLES, PLATFORM_TABLES, Base, Database
from core.db.session import current_merchant
from core.models import Merchant, Transaction
from tests.conftest import TEST_APP_USER, act_as_app
from tests.factories import insert_merchant, merchant_rows


def _count(conn: Connection, table: str) -> int:
    return int(conn.execute(select(func.count()).select_from(Base.metadata.tables[table])).scalar_one())


def test_scoped_and_platform_lists_cover_every_table_with_a_merchant_column(conn: Connection) -> None:
    tables = {
        row[0]
        for row in conn.execute(
            text(
                "SELECT table_name FROM information_schema.columns "
                "WHERE table_schema = 'public' AND column_name = 'merchant_id'"
            )
        )
    }
    unclassified = tables - set(MERCHANT_SCOPED_TABLES) - set(PLATFORM_TABLES)
    assert unclassified == set(), f"tables with merchant_id but no isolation decision: {unclassified}"
    assert set(merchant_rows("M1")) == set(MERCHANT_SCOPED_TABLES)


@pytest.mark.parametrize("table", MERCHANT_SCOPED_TABLES)
def test_rls_enabled_and_forced(conn: Connection, table: str) -> None:
    enabled, forced = conn.execute(
        text("SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass(:t)"),
        {"t": f"public.{table}"},
    ).one()
    assert enabled and forced


def test_app_role_is_neither_owner_nor_privileged(conn: Connection) -> None:
    for role in (TEST_APP_USER, APP_GROUP_ROLE):
        superuser, bypass = conn.execute(
            text("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = :r"), {"r": role}
        ).one()
        assert not superuser and not bypass
    owners = {
        row[0] for row in conn.execute(text("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = 'public'"))
    }
    assert TEST_APP_USER not in owners and APP_GROUP_ROLE not in owners


@pytest.mark.parametrize("table", PLATFORM_TABLES)
def test_app_role_has_no_privilege_on_platform_tables(conn: Connection, table: str) -> None:
    for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE"):
        allowed = conn.execute(
            text("SELECT has_table_privilege(:r, :t, :p)"),
            {"r": TEST_APP_USER, "t": f"public.{table}", "p": privilege},
        ).scalar_one()
        assert not allowed, f"{TEST_APP_USER} may {privilege} {table}"
    act_as_app(conn, "M_A")
    with pytest.raises(ProgrammingError, match="permission denied"):
        conn.execute(select(func.count()).select_from(Base.metadata.tables[table]))


@pytest.mark.parametrize("table", MERCHANT_SCOPED_TABLES)
def test_merchant_sees_only_its_own_rows(conn: Connection, table: str) -> None:
    insert_merchant(conn, "M_A")
    insert_merchant(conn, "M_B")
    assert _count(conn, table) == 2  # the owner sees both

    act_as_app(conn, "M_A")
    model = Base.metadata.tables[table]
    rows = conn.execute(select(model.c.merchant_id)).scalars().all()
    assert rows == ["M_A"]


@pytest.mark.parametrize("table", MERCHANT_SCOPED_TABLES)
def test_no_merchant_set_sees_nothing(conn: Connection, table: str) -> None:
    insert_merchant(conn, "M_A")
    act_as_app(conn, None)
    assert _count(conn, table) == 0


@pytest.mark.parametrize("table", MERCHANT_SCOPED_TABLES)
def test_cannot_write_another_merchants_rows(conn: Connection, table: str) -> None:
    insert_merchant(conn, "M_A")
    insert_merchant(conn, "M_B")
    act_as_app(conn, "M_A")
    model = Base.metadata.tables[table]
    # Updates and deletes of B's rows touch nothing.
    assert conn.execute(model.update().where(model.c.merchant_id == "M_B").values(merchant_id="M_B")).rowcount == 0
    assert conn.execute(model.delete().where(model.c.merchant_id == "M_B")).rowcount == 0
    # Inserting a row that claims to be B's is refused by the policy's WITH CHECK.
    row = merchant_rows("M_B")[table]
    savepoint = conn.begin_nested()
    with pytest.raises(DBAPIError, match="row-level security"):
        conn.execute(insert(model), [row])
    savepoint.rollback()


def test_cannot_move_own_row_to_another_merchant(conn: Connection) -> None:
    insert_merchant(conn, "M_A")
    insert_merchant(conn, "M_B")
    act_as_app(conn, "M_A")
    with pytest.raises(DBAPIError, match="row-level security"):
        conn.execute(update(Transaction).where(Transaction.merchant_id == "M_A").values(merchant_id="M_B"))


def test_pooled_app_connections_do_not_leak_scope(admin_engine: Engine, database_url: str) -> None:
    """End to end through the real app login role and a one-connection pool."""
    settings = DatabaseSettings(app_user=TEST_APP_USER, pool_size=1, max_overflow=0)
    database = Database(database_url, settings)
    with admin_engine.begin() as owner:
        insert_merchant(owner, "M_POOL_A")
        insert_merchant(owner, "M_POOL_B")
    try:
        with database.merchant_session("M_POOL_A") as session:
            names = session.scalars(select(Merchant.merchant_id)).all()
            assert names == ["M_POOL_A"]
            assert current_merchant(session.connection()) == "M_POOL_A"
        # Same pooled connection, next checkout, no merchant: nothing visible.
        with database.app_engine.connect() as raw:
            assert current_merchant(raw) is None
            assert raw.execute(select(func.count()).select_from(Merchant)).scalar_one() == 0
        with database.merchant_session("M_POOL_B") as session:
            assert session.scalars(select(Transaction.transaction_id)).all() == ["M_POOL_B-T1"]
            # A new transaction in the same session keeps its own scope.
            session.commit()
            assert session.scalars(select(Merchant.merchant_id)).all() == ["M_POOL_B"]
    finally:
        database.dispose()
        with admin_engine.begin() as owner:
            # Explicitly, table by table: the bulk fact tables have no cascading FKs.
            for table in reversed(MERCHANT_SCOPED_TABLES):
                model = Base.metadata.tables[table]
                owner.execute(model.delete().where(model.c.merchant_id.in_(["M_POOL_A", "M_POOL_B"])))
