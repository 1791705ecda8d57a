"""Schema migrations (Alembic) and provisioning of the app login role."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, pool, text
from sqlalchemy.engine import URL

from core.config import DatabaseSettings
from core.db.base import APP_GROUP_ROLE
from core.db.engine import normalize_url

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(url: str | URL) -> Config:
    """An Alembic config pointing at our migrations and ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["url"] = normalize_url(url).render_as_string(hide_password=False)
    return config


def head_revision() -> str:
    """The newest revision in the migrations folder."""
    head = ScriptDirectory.from_config(alembic_config("postgresql://x@/x")).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None when never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(url: str | URL, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str | URL, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` for an empty schema)."""
    command.downgrade(alembic_config(url), revision)


def provision_app_login(engine: Engine, settings: DatabaseSettings) -> None:
    """Create or update the app's login role as a member of the app group.

    The login role is not the tables' owner and has no BYPASSRLS, so the
    FORCE'd row-level-security policies apply to every query it runs. Skipped
    when an explicit ``app_url`` is configured (the operator manages that role).
    """
    if settings.app_url is not None:
        return
    user = settings.app_user
    password = settings.app_password.get_secret_value()
    with engine.begin() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :u"), {"u": user}).first()
        ident = conn.dialect.identifier_preparer.quote(user)
        # Role DDL cannot take bind parameters; quote the literal safely instead.
        literal = conn.exec_driver_sql("SELECT quote_literal(%s)", (password,)).scalar_one()
        verb = "ALTER" if exists else "CREATE"
        conn.exec_driver_sql(
            f"{verb} ROLE {ident} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE PASSWORD {literal}"
        )
        conn.exec_driver_sql(f"GRANT {APP_GROUP_ROLE} TO {ident}")


def migrate(url: str | URL, settings: DatabaseSettings, revision: str = "head") -> str | None:
    """Upgrade the schema, provision the app login, return the new revision."""
    upgrade(url, revision)
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    try:
        provision_app_login(engine, settings)
        return current_revision(engine)
    finally:
        engine.dispose()
