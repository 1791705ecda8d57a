"""DDL for the pgvector extension, the app role and tenant row-level security.

Used by migrations. Policies compare ``merchant_id`` with the transaction-local
setting ``app.merchant_id``; when it is unset (or reset to '' at the end of a
transaction) no row matches, so a session with no merchant sees nothing.
"""

from __future__ import annotations

from alembic import op

from core.db.base import APP_GROUP_ROLE

POLICY = "tenant_isolation"
_MATCH = "merchant_id = NULLIF(current_setting('app.merchant_id', true), '')"


def create_extensions() -> None:
    """pgvector must exist before any vector column."""
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")


def create_app_group_role() -> None:
    """The group role merchant-facing logins belong to: no login, no BYPASSRLS."""
    op.execute(
        f"""
        DO $$
        BEGIN
          IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{APP_GROUP_ROLE}') THEN
            CREATE ROLE {APP_GROUP_ROLE} NOLOGIN NOBYPASSRLS;
          END IF;
        END
        $$;
        """
    )
    op.execute(f"GRANT USAGE ON SCHEMA public TO {APP_GROUP_ROLE}")


def enable_tenant_rls(table: str, privileges: str = "SELECT, INSERT, UPDATE, DELETE") -> None:
    """Force row-level security on ``table`` and grant the app role ``privileges``.

    FORCE makes the policy apply to the table's owner as well; only superusers
    and BYPASSRLS roles (migrations, batch ETL) are exempt.
    """
    op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY {POLICY} ON {table} USING ({_MATCH}) WITH CHECK ({_MATCH})")
    op.execute(f"GRANT {privileges} ON {table} TO {APP_GROUP_ROLE}")


def disable_tenant_rls(table: str) -> None:
    """Undo :func:`enable_tenant_rls` (used by downgrades)."""
    op.execute(f"REVOKE ALL ON {table} FROM {APP_GROUP_ROLE}")
    op.execute(f"DROP POLICY IF EXISTS {POLICY} ON {table}")
    op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
    op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


def grant_sequences(tables: tuple[str, ...]) -> None:
    """Let the app role draw ids from the identity columns of ``tables`` only."""
    names = ", ".join(f"'{t}'" for t in tables)
    op.execute(
        f"""
        DO $$
        DECLARE seq text;
        BEGIN
          FOR seq IN
            SELECT pg_get_serial_sequence(format('%I', c.table_name), c.column_name)
            FROM information_schema.columns c
            WHERE c.table_schema = 'public' AND c.table_name IN ({names})
              AND (c.is_identity = 'YES' OR c.column_default LIKE 'nextval(%')
          LOOP
            IF seq IS NOT NULL THEN
              EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO {APP_GROUP_ROLE}', seq);
            END IF;
          END LOOP;
        END
        $$;
        """
    )


def revoke_schema_usage() -> None:
    """Undo :func:`create_app_group_role`'s schema grant (used by downgrades).

    The role itself is cluster-wide and left in place: other databases on the
    same server (tests, other environments) may still use it.
    """
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {APP_GROUP_ROLE}")
