"""`dag.test()` of merchant_daily for one day: real Airflow, real PostgreSQL, generated landing data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, pool, text

from core.config import DatabaseSettings, Settings
from core.db.engine import normalize_url
from pipelines.synthetic import GenerateConfig, generate
from tests.conftest import migrated_database
from tests.dags.conftest import child_env, requires_airflow, run_probe

pytestmark = requires_airflow

DAY = "2026-10-29"  # the first generated day: it carries the merchants and products partitions
DATASETS = ("merchants", "products", "transactions", "reviews", "attachments")


@pytest.fixture(scope="module")
def project_db(pg_server_url: str, db_settings: DatabaseSettings) -> Iterator[str]:
    """A fresh, migrated project database the DAG's tasks write to."""
    with migrated_database(pg_server_url, db_settings, "copilot_dag") as url:
        yield url


@pytest.fixture(scope="module")
def landing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("landing") / "root"
    summary = generate(GenerateConfig(merchants=2, days=3, out=out))
    assert summary.start_date.isoformat() == DAY
    return out


def _counts(url: str) -> dict[str, int]:
    engine = create_engine(normalize_url(url), poolclass=pool.NullPool)
    queries = {
        "merchants": "SELECT count(*) FROM merchants",
        "products": "SELECT count(*) FROM products",
        "transactions": "SELECT count(*) FROM transactions",
        "reviews": "SELECT count(*) FROM reviews",
        "attachments": "SELECT count(*) FROM attachments",
        "daily_metrics": "SELECT count(*) FROM daily_metrics",
        "merchants_with_metrics": "SELECT count(DISTINCT merchant_id) FROM daily_metrics",
        "embedded_chunks": "SELECT count(*) FROM text_chunks WHERE embedding IS NOT NULL",
        "insight_requests": "SELECT count(*) FROM notification_outbox",
    }
    try:
        with engine.connect() as conn:
            return {name: int(conn.execute(text(sql)).scalar_one()) for name, sql in queries.items()}
    finally:
        engine.dispose()


def _run(env: dict[str, str], landing: Path) -> dict[str, Any]:
    result = run_probe(env, "test", "merchant_daily", DAY, json.dumps({"landing_root": str(landing)}))
    print(f"merchant_daily dag.test({DAY}): {result['seconds']}s")  # shown with -s; timings live in bench/
    failed = {task: state for task, state in result["tasks"].items() if state != "success"}
    assert result["state"] == "success" and failed == {}, f"failed tasks: {failed}"
    return result


def test_merchant_daily_loads_a_day_and_reruns_without_duplicates(
    airflow_settings: Settings, airflow_metadata_url: str, project_db: str, redis_url: str, landing: Path
) -> None:
    env = child_env(
        airflow_settings,
        airflow_metadata_url,
        COPILOT_DATABASE__URL=project_db,
        COPILOT_REDIS__URL=redis_url,
    )

    first = _run(env, landing)
    returns = first["returns"]
    assert len(first["tasks"]) == 10
    for dataset in DATASETS:
        summary = returns[f"ingest_{dataset}"]
        assert summary["dataset"] == dataset and summary["partitions"] == [DAY]
        assert summary["failed_files"] == 0
        assert summary["rows_read"] == summary["rows_loaded"] + summary["rows_quarantined"] > 0
    assert returns["quality_check"]["ok"] is True
    insights = returns["trigger_insights"]
    assert insights["as_of"] == DAY and insights["requested"] == insights["merchants"] > 0

    counts = _counts(project_db)
    assert counts["merchants"] == 2
    assert counts["transactions"] == returns["ingest_transactions"]["rows_loaded"]
    assert counts["merchants_with_metrics"] == 2
    assert counts["embedded_chunks"] > 0
    assert counts["insight_requests"] == insights["requested"]

    # Re-running the same logical date (a retry, a cleared run) duplicates nothing.
    second = _run(env, landing)
    assert second["returns"]["trigger_insights"]["requested"] == 0
    assert _counts(project_db) == counts


def test_a_run_without_logical_date_is_refused_not_widened_to_every_partition(
    airflow_settings: Settings, airflow_metadata_url: str, project_db: str, redis_url: str, landing: Path
) -> None:
    env = child_env(
        airflow_settings,
        airflow_metadata_url,
        COPILOT_DATABASE__URL=project_db,
        COPILOT_REDIS__URL=redis_url,
    )
    result = run_probe(env, "test", "merchant_daily", "none", json.dumps({"landing_root": str(landing)}))
    assert result["state"] == "failed"
    assert result["tasks"]["ingest_merchants"] == "failed"
    assert "trigger the run with a logical date" in result["output"]
