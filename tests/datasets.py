"""One generated, ingested and aggregated dataset shared by the metrics and ask tests.

The fixtures are registered by tests/conftest.py.

Six merchants (Berlin, New York, London, Tokyo/JPY, Sydney, Los Angeles) over
94 days from 2025-10-04 to 2026-01-05: Sydney's spring-forward (10-05),
Europe's (10-26) and the US's (11-02) fall-back, every month boundary from
October to January and the 2025/2026 year boundary. Loaded with the real
loader into a database of its own, then read as the RLS-bound app role.
"""

from __future__ import annotations

import csv
import gzip
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from core.config import DatabaseSettings, Settings
from core.db import Database
from pipelines.aggregates import refresh_pending
from pipelines.context import PipelineContext
from pipelines.ingest import ingest
from pipelines.synthetic import GenerateConfig, generate
from tests.conftest import migrated_database
from tests.core.metrics.reference import Reference
from tests.oracle import read_facts

END = date(2026, 1, 5)
DAYS = 94


@pytest.fixture(scope="session")
def metrics_landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("metrics") / "landing"
    generate(GenerateConfig(merchants=6, days=DAYS, seed=7, out=out, end_date=END, volume=0.15))
    return out


@pytest.fixture(scope="session")
def metrics_db(pg_server_url: str, db_settings: DatabaseSettings, metrics_landing: Path) -> Iterator[Database]:
    with migrated_database(pg_server_url, db_settings, "copilot_metrics") as url:
        settings = Settings(database=db_settings)
        database = Database(url, db_settings)
        ctx = PipelineContext(settings=settings, database=database)
        summary = ingest(ctx, str(metrics_landing), datasets=("merchants", "products", "transactions"))
        assert summary.failed_files == []
        refresh_pending(ctx)
        with database.admin_engine.begin() as conn:
            conn.execute(text("ANALYZE"))
        yield database
        database.dispose()


def _products(root: Path) -> dict[tuple[str, str], tuple[str, str | None]]:
    """(merchant, product) -> (name, category); the latest partition wins."""
    out: dict[tuple[str, str], tuple[str, str | None]] = {}
    for part in sorted((root / "products").iterdir()):
        for f in sorted(part.iterdir()):
            opener = gzip.open if f.name.endswith(".gz") else open
            with opener(f, "rt", encoding="utf-8", newline="") as fh:
                for row in csv.DictReader(fh):
                    out[(row["merchant_id"], row["product_id"])] = (row["name"], row.get("category") or None)
    return out


@pytest.fixture(scope="session")
def reference(metrics_landing: Path) -> Reference:
    facts = read_facts(metrics_landing)
    assert facts.rejected == []
    return Reference(facts.merchants, list(facts.transactions.values()), _products(metrics_landing))
