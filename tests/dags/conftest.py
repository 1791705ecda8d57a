"""Fixtures for the DAG tests: real Airflow processes on a real PostgreSQL metadata database.

Airflow runs only in child processes (``airflow_probe.py``, the ``airflow``
executable), configured by :func:`app.airflow_cli.airflow_env`, the function
``copilot airflow up`` uses; the pytest process never imports it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.airflow_cli import airflow_env, migrate_metadata
from core.config import EmbeddedSettings, Settings
from tests.conftest import create_database, drop_database, short_tmp

PROBE = Path(__file__).with_name("airflow_probe.py")
ROOT = Path(__file__).resolve().parents[2]

requires_airflow = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None,
    reason="Airflow is the optional `airflow` dependency group: lifts after `uv sync --group airflow` "
    "(run `uv run --group airflow pytest tests/dags`)",
)


def airflow_bin() -> Path:
    return Path(sys.executable).with_name("airflow")


def child_env(settings: Settings, metadata_url: str, *, port: int = 8080, **extra: str) -> dict[str, str]:
    """This process's environment without the developer's COPILOT_/AIRFLOW settings, plus ``airflow_env``."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("COPILOT_", "AIRFLOW"))}
    return {**inherited, **airflow_env(settings, metadata_url, port=port), **extra}


@pytest.fixture(scope="session")
def airflow_settings() -> Iterator[Settings]:
    """Settings whose data folder (and so AIRFLOW_HOME) is a fresh temporary folder."""
    data_dir = short_tmp("cpaf")
    yield Settings(embedded=EmbeddedSettings(data_dir=data_dir))
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_metadata_url(pg_server_url: str, airflow_settings: Settings) -> Iterator[str]:
    """A fresh Airflow metadata database, migrated by ``airflow db migrate``."""
    name = f"airflow_test_{uuid.uuid4().hex[:8]}"
    url = create_database(pg_server_url, name)
    env = child_env(airflow_settings, url)
    migrate_metadata(airflow_bin(), env, Path(env["AIRFLOW_HOME"]) / "db-migrate.log")
    yield url
    drop_database(pg_server_url, name)


def run_probe(env: dict[str, str], *args: str, timeout: float = 240) -> dict[str, Any]:
    """Run ``airflow_probe.py`` with ``args``; return its JSON plus its console output under ``"output"``."""
    out = Path(env["AIRFLOW_HOME"]) / f"probe-{uuid.uuid4().hex[:8]}.json"
    result = subprocess.run(
        [sys.executable, str(PROBE), *args, str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0 or not out.exists():
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-40:])
        pytest.fail(f"airflow_probe {args[0]} exited with {result.returncode}:\n{tail}")
    data: dict[str, Any] = json.loads(out.read_text())
    data["output"] = result.stdout + result.stderr
    return data
