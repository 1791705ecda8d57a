"""A throwaway, migrated embedded PostgreSQL for benchmarks (one place for start, migrate, stop, clean up)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.config import DatabaseSettings
from core.db.migrate import migrate
from core.embedded import EmbeddedPostgres


@contextmanager
def migrated_postgres(prefix: str, database: str, settings: DatabaseSettings) -> Iterator[str]:
    """Start an embedded PostgreSQL in a fresh /tmp folder, migrate it, yield its owner URL, then remove it."""
    workdir = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    server = EmbeddedPostgres(Path(workdir), database=database)
    url = server.start()
    try:
        migrate(url, settings)
        yield url
    finally:
        server.stop()  # before removing the folder: the server must not lose its data dir while running
        shutil.rmtree(workdir, ignore_errors=True)
