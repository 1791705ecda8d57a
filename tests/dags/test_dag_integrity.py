"""Every DAG file imports cleanly and is wired as ARCHITECTURE.md and STYLE.md ask."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from tests.dags.conftest import ROOT, child_env, requires_airflow, run_probe

pytestmark = requires_airflow

DAGS_DIR = ROOT / "dags"
DATASETS = ("merchants", "products", "transactions", "reviews", "attachments")
INGEST = [f"ingest_{name}" for name in DATASETS]
DOWNSTREAM = ["quality_check", "refresh_aggregates", "extract_text", "embed_chunks"]


@pytest.fixture(scope="module")
def dagbag(airflow_settings: Settings, airflow_metadata_url: str) -> dict[str, Any]:
    return run_probe(child_env(airflow_settings, airflow_metadata_url), "dagbag")


def dag_files() -> list[Path]:
    # Modules starting with "_" hold shared settings, not DAGs (see dags/.airflowignore).
    return sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))


def test_every_dag_file_imports_and_defines_a_dag(dagbag: dict[str, Any]) -> None:
    assert dagbag["import_errors"] == {}
    files = {Path(d["fileloc"]).name for d in dagbag["dags"].values()}
    assert files == {p.name for p in dag_files()}
    assert {"merchant_daily", "merchant_backfill"} <= set(dagbag["dags"])


def test_every_dag_has_tags_retries_and_docs(dagbag: dict[str, Any]) -> None:
    for dag_id, dag in dagbag["dags"].items():
        assert "merchant-copilot" in dag["tags"], dag_id
        assert len(dag["doc_md"].strip()) > 200, f"{dag_id}: doc_md should explain the flow and re-runs"
        assert dag["max_active_runs"] == 1, dag_id
        assert dag["params"]["landing_root"], dag_id
        for task_id, task in dag["tasks"].items():
            if task_id == "quality_check":
                # A data-quality failure does not heal by retrying.
                assert task["retries"] == 0
            else:
                assert task["retries"] >= 1, f"{dag_id}.{task_id}"
                assert task["retry_exponential_backoff"] > 1, f"{dag_id}.{task_id}"


def _assert_chain(tasks: dict[str, Any], chain: list[str]) -> None:
    assert set(tasks) == set(INGEST + chain)
    for previous, current in pairwise(INGEST):
        assert tasks[current]["upstream"] == [previous], current
    assert tasks[INGEST[0]]["upstream"] == []
    # quality_check reads all five summaries.
    assert sorted(tasks["quality_check"]["upstream"]) == sorted(INGEST)
    for previous, current in pairwise(chain):
        assert tasks[current]["upstream"] == [previous], current


def test_merchant_daily_schedule_and_task_order(dagbag: dict[str, Any]) -> None:
    dag = dagbag["dags"]["merchant_daily"]
    assert dag["tags"] == ["ingest", "merchant-copilot"]
    # Logical date = the day being loaded; runs start once that day is over.
    assert dag["timetable"] == "CronDataIntervalTimetable"
    assert dag["catchup"] is True
    assert dag["start_date"].startswith("2026-01-01")
    _assert_chain(dag["tasks"], [*DOWNSTREAM, "trigger_insights"])
    # Partitions load in date order: each ingest waits for the previous day's.
    assert all(dag["tasks"][t]["depends_on_past"] for t in INGEST)


def test_merchant_backfill_is_manual_and_triggers_no_insights(dagbag: dict[str, Any]) -> None:
    dag = dagbag["dags"]["merchant_backfill"]
    assert dag["timetable"] == "NullTimetable"
    _assert_chain(dag["tasks"], DOWNSTREAM)
