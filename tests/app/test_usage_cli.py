"""``copilot usage export`` through Typer's runner, on the test database."""

from __future__ import annotations

import asyncio
import csv
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from sqlalchemy import Engine, text
from typer.testing import CliRunner

from app.usage_cli import app
from core.config import get_settings
from gateway.metering import UsageEvent, UsageExportError, UsageRecorder

# A month no other test writes usage into.
PERIOD = "2391-04"
START = datetime(2391, 4, 1, tzinfo=UTC)


@pytest.fixture
def tenant(admin_engine: Engine) -> Iterator[str]:
    tenant_id = f"cli-{uuid.uuid4().hex[:10]}"
    yield tenant_id
    with admin_engine.begin() as connection:
        connection.execute(text("DELETE FROM usage_records WHERE tenant_id LIKE :t"), {"t": f"{tenant_id}%"})


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch, database_url: str, tmp_path: Path) -> Iterator[None]:
    for key in ("COPILOT_REDIS__URL", "COPILOT_ENVIRONMENT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COPILOT_DATABASE__URL", database_url)
    monkeypatch.setenv("COPILOT_EMBEDDED__DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def events(database_url: str, tenant: str, tmp_path: Path) -> list[UsageEvent]:
    made = [
        UsageEvent(tenant_id=tenant, endpoint="chat", model="gpt-4o-mini", cost_micros_usd=250_000, created_at=START),
        UsageEvent(
            tenant_id=tenant, endpoint="embeddings", model="copilot-local-embed", cost_micros_usd=1,
            created_at=START + timedelta(days=10),
        ),
        UsageEvent(
            tenant_id=f"{tenant}-b", endpoint="chat", model="gpt-4o-mini", cost_micros_usd=40,
            created_at=START + timedelta(days=11),
        ),
        # The next month: outside the period.
        UsageEvent(tenant_id=tenant, endpoint="chat", model="m", cost_micros_usd=9, created_at=datetime(2391, 5, 1, tzinfo=UTC)),
    ]  # fmt: skip

    async def write() -> None:
        async with UsageRecorder(database_url, spool_dir=tmp_path / "spool", flush_interval_s=3600) as recorder:
            for event in made:
                recorder.record(event)
            await recorder.flush()

    asyncio.run(write())
    return made


def test_export_period_of_one_tenant_to_csv(
    settings_env: None, events: list[UsageEvent], tenant: str, tmp_path: Path
) -> None:
    out = tmp_path / "usage.csv"
    result = CliRunner().invoke(app, ["export", "--period", PERIOD, "--tenant", tenant, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.count("\n") == 1
    assert f"exported 2 usage records (tenant {tenant}," in result.output
    assert "total 0.250001 USD" in result.output and str(out) in result.output
    with open(out, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["request_id"] for r in rows] == [str(e.request_id) for e in events[:2]]


def test_export_start_end_to_parquet_as_json(
    settings_env: None, events: list[UsageEvent], tenant: str, tmp_path: Path
) -> None:
    out = tmp_path / "usage.parquet"
    result = CliRunner().invoke(
        app,
        [
            "export",
            "--start",
            "2391-04-05",
            "--end",
            "2391-05-01T00:00:00",
            "--format",
            "parquet",
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    # All tenants from 5 April: the embedding call and the other tenant's call.
    assert summary["rows"] == 2 and summary["format"] == "parquet"
    assert Decimal(summary["cost_usd"]) == Decimal("0.000041") and summary["cost_micros_usd"] == 41
    assert summary["start"] == "2391-04-05T00:00:00+00:00" and summary["end"] == "2391-05-01T00:00:00+00:00"
    table = pq.read_table(out)
    assert table.column("request_id").to_pylist() == [str(events[1].request_id), str(events[2].request_id)]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--out", "x.csv"], "give --period YYYY-MM, or both --start and --end"),
        (["--period", "2026-11", "--start", "2026-11-01", "--out", "x.csv"], "not both"),
        (["--start", "2026-11-01", "--out", "x.csv"], "both --start and --end"),
        (["--period", "2026-13", "--out", "x.csv"], "not a billing period"),
        (["--period", "2026-11", "--format", "xlsx", "--out", "x.csv"], "unknown format 'xlsx'"),
        (["--start", "yesterday", "--end", "2026-11-02", "--out", "x.csv"], "not a date or ISO datetime"),
        (["--start", "2026-11-02", "--end", "2026-11-01", "--out", "x.csv"], "--end must be after --start"),
    ],
)
def test_argument_errors_are_usage_errors(settings_env: None, args: list[str], needle: str) -> None:
    result = CliRunner().invoke(app, ["export", *args])
    assert result.exit_code == 2
    assert needle in " ".join(result.output.split())


def test_unwritable_destination_is_an_expected_error(settings_env: None, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", "--period", PERIOD, "--out", str(tmp_path / "missing" / "u.csv")])
    assert isinstance(result.exception, UsageExportError)
    assert "does not exist" in str(result.exception)
