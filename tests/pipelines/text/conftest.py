"""Fixtures for the text pipeline: a database of its own, a synthetic landing root, row helpers.

``extract_text`` and ``embed_pending`` work on every queued row of the
database and commit batch by batch, so these tests cannot share the session
database (or its rolled-back ``conn``) with other suites: they get a freshly
migrated database, emptied before each test.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, insert, text

import core.models  # noqa: F401  (registers every table)
from core.config import DatabaseSettings, Settings
from core.db import Base, Database
from pipelines.context import PipelineContext
from pipelines.landing import FolderRoot
from pipelines.synthetic import GenerateConfig, generate
from tests.conftest import migrated_database

T0 = datetime(2026, 10, 1, 12, 0, tzinfo=UTC)
TABLES = Base.metadata.tables


@pytest.fixture(scope="session")
def text_database_url(pg_server_url: str, db_settings: DatabaseSettings) -> Iterator[str]:
    with migrated_database(pg_server_url, db_settings, "copilot_text") as url:
        yield url


@pytest.fixture
def text_db(text_database_url: str, db_settings: DatabaseSettings) -> Iterator[Database]:
    database = Database(text_database_url, db_settings)
    with database.admin_engine.begin() as conn:
        conn.execute(text("TRUNCATE merchants, text_chunks CASCADE"))
    yield database
    database.dispose()


@pytest.fixture
def ctx(text_db: Database) -> PipelineContext:
    return PipelineContext(settings=Settings(), database=text_db)


@pytest.fixture
def engine(text_db: Database) -> Engine:
    return text_db.admin_engine


# --------------------------------------------------------------------------- rows


def add_merchant(engine: Engine, merchant_id: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(TABLES["merchants"]),
            [
                {
                    "merchant_id": merchant_id,
                    "name": f"Shop {merchant_id}",
                    "category": "cafe",
                    "country": "DE",
                    "currency": "EUR",
                    "timezone": "Europe/Berlin",
                    "created_at": T0,
                }
            ],
        )


def add_reviews(engine: Engine, merchant_id: str, texts: dict[str, str | None], **extra: Any) -> None:
    rows = [
        {
            "merchant_id": merchant_id,
            "review_id": review_id,
            "created_at": T0,
            "rating": extra.get("rating", 4),
            "text": body,
            "source": extra.get("source", "google"),
        }
        for review_id, body in texts.items()
    ]
    with engine.begin() as conn:
        conn.execute(insert(TABLES["reviews"]), rows)


def add_product(engine: Engine, merchant_id: str, product_id: str, name: str, **extra: Any) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(TABLES["products"]),
            [
                {
                    "merchant_id": merchant_id,
                    "product_id": product_id,
                    "name": name,
                    "category": extra.get("category"),
                    "description": extra.get("description"),
                    "price_minor": 350,
                    "currency": "EUR",
                }
            ],
        )


def add_attachment(
    engine: Engine,
    merchant_id: str,
    attachment_id: str,
    kind: str,
    content_type: str,
    path: str,
    note: str | None = None,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            insert(TABLES["attachments"]),
            [
                {
                    "merchant_id": merchant_id,
                    "attachment_id": attachment_id,
                    "created_at": T0,
                    "kind": kind,
                    "content_type": content_type,
                    "path": path,
                    "note": note,
                }
            ],
        )


def chunks_of(engine: Engine, source_type: str | None = None, source_id: str | None = None) -> list[Any]:
    sql = "SELECT * FROM text_chunks WHERE true"
    params: dict[str, Any] = {}
    if source_type:
        sql += " AND source_type = :t"
        params["t"] = source_type
    if source_id:
        sql += " AND source_id = :s"
        params["s"] = source_id
    with engine.connect() as conn:
        return list(conn.execute(text(sql + " ORDER BY merchant_id, source_type, source_id, chunk_index"), params))


# --------------------------------------------------------------------------- landing


@dataclass(frozen=True)
class Landing:
    root: FolderRoot
    path: Path
    attachments: list[dict[str, Any]]  # manifest rows, each with the generator's "role" and "facts"

    def of(self, merchant_id: str, role: str) -> dict[str, Any]:
        return next(a for a in self.attachments if a["merchant_id"] == merchant_id and a["role"] == role)


@pytest.fixture(scope="session")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Landing:
    """Two merchants, a week of data, every attachment kind (plus labels of what they contain)."""
    out = tmp_path_factory.mktemp("text_landing") / "landing"
    summary = generate(GenerateConfig(merchants=2, days=7, out=out))
    labels = json.loads(Path(summary.labels_path).read_text("utf-8"))
    facts = {a["attachment_id"]: a for a in labels["attachments"]}
    manifest: list[dict[str, Any]] = []
    for part in sorted(out.glob("attachments/dt=*/*.csv")):
        with part.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                label = facts[row["attachment_id"]]
                manifest.append({**row, "role": label["role"], "facts": label["facts"]})
    return Landing(FolderRoot(out), out, manifest)
