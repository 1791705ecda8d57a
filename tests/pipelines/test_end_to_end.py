"""Landing files → real loader → aggregates, against an independent computation.

The window spans the 2026 DST changes of the US (03-08), Europe (03-29) and
Australia (04-05), and merchants ahead of UTC (Tokyo, Sydney), so local days
and hours differ from UTC ones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import text

from pipelines.aggregates import refresh_pending
from pipelines.context import PipelineContext
from pipelines.ingest import ingest
from pipelines.synthetic import GenerateConfig, generate
from tests.oracle import actual_metrics, diff, expected_metrics

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("e2e") / "landing"
    generate(GenerateConfig(merchants=8, days=35, seed=2026, out=out, end_date=date(2026, 4, 8), volume=0.3))
    return out


def test_aggregates_equal_an_independent_computation(ctx: PipelineContext, landing: Path) -> None:
    summary = ingest(ctx, str(landing))
    assert summary.failed_files == []
    refreshed = refresh_pending(ctx)
    assert refreshed.as_dict()["merchant_days"] > 0
    expected = expected_metrics(landing)
    with ctx.engine.connect() as conn:
        timezones = set(conn.execute(text("SELECT DISTINCT timezone FROM merchants")).scalars())
        problems = diff(expected, actual_metrics(conn))
        queued = conn.execute(text("SELECT count(*) FROM metric_refresh_queue")).scalar_one()
    assert len(timezones) >= 4, timezones  # several zones, incl. ones ahead of UTC
    assert queued == 0
    assert not problems, "\n".join(problems)


def test_cli_runs_the_whole_pipeline(landing: Path, database_url: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPILOT_")}
    env.update(COPILOT_DATABASE__URL=database_url, COPILOT_DATABASE__APP_USER="copilot_api_test")
    last_day = sorted(p.name for p in (landing / "transactions").iterdir())[-1].removeprefix("dt=")
    try:
        first = subprocess.run(
            [sys.executable, "-m", "app", "ingest", str(landing), "--all", "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert first.returncode == 0, first.stderr
        result = json.loads(first.stdout)
        steps = result["steps"]
        assert steps["aggregates"]["merchant_days"] > 0
        assert steps["text"]["chunks_written"] > 0
        assert steps["embeddings"]["embedded"] > 0
        assert steps["insights"]["requested"] > 0

        # One day again, as the daily DAG would: nothing new to do, nothing duplicated.
        again = subprocess.run(
            [sys.executable, "-m", "app", "ingest", str(landing), "--date", last_day, "--json"],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600, check=False,
        )  # fmt: skip
        assert again.returncode == 0, again.stderr
        rerun = json.loads(again.stdout)["steps"]
        assert rerun["embeddings"]["embedded"] == 0
        assert rerun["insights"]["requested"] == 0
        assert rerun["aggregates"]["merchant_days"] == 0
    finally:
        from sqlalchemy import create_engine, pool

        engine = create_engine(
            database_url.replace("postgresql://", "postgresql+psycopg://", 1), poolclass=pool.NullPool
        )
        with engine.begin() as conn:
            conn.execute(
                text(
                    "TRUNCATE merchants, transactions, transaction_items, ingestion_runs, metric_refresh_queue, "
                    "notification_outbox, text_chunks CASCADE"
                )
            )
        engine.dispose()
