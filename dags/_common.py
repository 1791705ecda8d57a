"""Settings shared by the project's DAGs (no DAG is defined here)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param

from core.config import get_settings


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
