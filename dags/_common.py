"""Settings and the post-load tasks shared by the project's DAGs (no DAG is defined here)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, task

from core.config import get_settings
from pipelines import tasks


def retry_args(execution_timeout: timedelta) -> dict[str, Any]:
    """Task defaults: two retries with exponential backoff, then give up."""
    return {
        "retries": 2,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "execution_timeout": execution_timeout,
    }


def landing_root_param() -> dict[str, Param]:
    """The ``landing_root`` DAG param, defaulting to COPILOT_PIPELINES__LANDING_ROOT."""
    return {
        "landing_root": Param(
            get_settings().pipelines.landing_root,
            type="string",
            minLength=1,
            description="Landing root: a folder or s3://bucket/prefix (DATA_CONTRACT.md layout).",
        ),
    }


# A data-quality failure does not go away by retrying.
@task(retries=0)
def quality_check(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Fail the run when a file failed, counts do not balance, or too much was quarantined."""
    return tasks.check_quality(summaries, max_quarantine_ratio=get_settings().pipelines.max_quarantine_ratio)


@task
def refresh_aggregates() -> dict[str, Any]:
    """Recompute the metrics of every queued merchant-day."""
    return tasks.refresh_aggregates()


@task
def extract_text(root: str) -> dict[str, Any]:
    """Chunk changed text and extract pending attachments."""
    return tasks.extract_text(root)


@task
def embed_chunks() -> dict[str, Any]:
    """Embed new or changed chunks."""
    return tasks.embed_chunks()
