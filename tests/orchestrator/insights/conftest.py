"""A labelled dataset, generated and ingested once into a database of its own.

The synthetic generator injects events and writes ``labels.json``; the real
loader and aggregate step fill the metric tables. Ingestion commits, so the
dataset lives in its own migrated database (not the rolled-back session one);
tests that store insights empty ``insights`` and ``notification_outbox`` first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, text

from core.config import DatabaseSettings, Settings
from core.db import Database
from pipelines.aggregates import refresh_pending
from pipelines.context import PipelineContext
from pipelines.ingest import ingest
from pipelines.synthetic import GenerateConfig, generate
from tests.conftest import migrated_database

END = date(2026, 10, 31)
DAYS = 56


@dataclass
class Labelled:
    engine: Engine
    labels: dict[str, Any]
    first_day: date
    last_day: date

    @property
    def events(self) -> list[dict[str, Any]]:
        return list(self.labels["events"])

    @property
    def quiet(self) -> list[str]:
        return sorted(m["merchant_id"] for m in self.labels["merchants"] if m["quiet"])

    @property
    def merchant_ids(self) -> list[str]:
        return sorted(m["merchant_id"] for m in self.labels["merchants"])


@pytest.fixture(scope="session")
def labelled(
    pg_server_url: str, db_settings: DatabaseSettings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Labelled]:
    out = tmp_path_factory.mktemp("insights") / "landing"
    generate(GenerateConfig(merchants=8, days=DAYS, seed=7, out=out, end_date=END, volume=0.5))
    labels = json.loads((out / "labels.json").read_text())
    with migrated_database(pg_server_url, db_settings, "copilot_ins") as url:
        database = Database(url, db_settings)
        ctx = PipelineContext(settings=Settings(database=db_settings), database=database)
        summary = ingest(ctx, str(out))
        assert summary.failed_files == []
        refresh_pending(ctx)
        first = date.fromordinal(END.toordinal() - DAYS + 1)
        yield Labelled(database.admin_engine, labels, first, END)
        database.dispose()


@pytest.fixture
def clean(labelled: Labelled) -> Engine:
    with labelled.engine.begin() as conn:
        conn.execute(text("TRUNCATE insights, notification_outbox, notifications"))
    return labelled.engine


def landing_root(path: Path) -> str:
    return str(path)
