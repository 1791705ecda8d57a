"""The ``copilot`` CLI as a user runs it: a real process, real servers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import short_tmp

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        cwd=env.get("_CWD", str(ROOT)),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPILOT_")}
    env.update(extra)
    return env


@pytest.fixture
def cli_env() -> Iterator[dict[str, str]]:
    data_dir = short_tmp("cpcli")
    env = _clean_env(COPILOT_EMBEDDED__DATA_DIR=str(data_dir), _CWD=str(data_dir))
    yield env
    run_cli("down", env=env)
    shutil.rmtree(data_dir, ignore_errors=True)


def test_up_status_migrate_down(cli_env: dict[str, str]) -> None:
    status = json.loads(run_cli("status", "--json", env=cli_env).stdout)
    assert [s["running"] for s in status["services"]] == [False, False]

    first = run_cli("up", env=cli_env)
    assert first.returncode == 0, first.stderr
    assert "postgres: postgresql+psycopg://" in first.stdout and "redis: unix://" in first.stdout

    status = json.loads(run_cli("status", "--json", env=cli_env).stdout)
    pg, rd = status["services"]
    assert pg["running"] and pg["detail"].startswith("vector ") and rd["running"]

    # `up` twice does not start a second copy.
    assert run_cli("up", env=cli_env).returncode == 0
    again = json.loads(run_cli("status", "--json", env=cli_env).stdout)
    assert [s["pid"] for s in again["services"]] == [pg["pid"], rd["pid"]]

    migrated = run_cli("db", "migrate", env=cli_env)
    assert migrated.returncode == 0, migrated.stderr
    assert "database at revision" in migrated.stdout
    current = run_cli("db", "current", env=cli_env)
    assert "up to date" in current.stdout

    down = run_cli("down", env=cli_env)
    assert down.returncode == 0
    assert "postgres: stopped" in down.stdout and "redis: stopped" in down.stdout
    status = json.loads(run_cli("status", "--json", env=cli_env).stdout)
    assert [s["running"] for s in status["services"]] == [False, False]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("generate", "--merchants", "abc"), "Invalid value for '--merchants'"),
        (("generate", "--days", "0"), "must be at least 1"),
        (("generate", "--end-date", "2026-13-01"), "is not a date"),
        (("generate", "--format", "xml"), "unknown format"),
        (("db", "migrate", "--bogus"), "No such option: --bogus"),
        (("frobnicate",), "No such command"),
        (("ingest", "data/landing"), "give exactly one of --date YYYY-MM-DD or --all"),
        (("ingest", "data/landing", "--all", "--date", "2026-01-01"), "give exactly one of --date"),
        (("ingest", "data/landing", "--date", "01/02/2026"), "is not a date"),
        (("ingest", "data/landing", "--all", "--dataset", "payments"), "unknown dataset 'payments'"),
    ],
)
def test_bad_arguments_give_one_line(args: tuple[str, ...], needle: str) -> None:
    result = run_cli(*args, env=_clean_env())
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("copilot: error:") and needle in lines[0]
    assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_line_without_secret(tmp_path: Path) -> None:
    env = _clean_env(COPILOT_DATABASE__URL="postgresql://owner:hunter2@127.0.0.1:9/copilot", _CWD=str(tmp_path))
    result = run_cli("db", "migrate", env=env)
    # A configured database means nothing embedded starts (and migrate needs no Redis).
    assert not (tmp_path / ".copilot").exists()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot reach PostgreSQL at postgresql+psycopg://owner:***@127.0.0.1:9/copilot" in lines[0]
    assert "hunter2" not in result.stderr and "Traceback" not in result.stderr


def test_invalid_setting_is_one_line() -> None:
    result = run_cli("status", env=_clean_env(COPILOT_DATABASE__POOL_SIZE="lots"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("copilot: error: invalid configuration COPILOT_DATABASE__POOL_SIZE")


def test_ingest_of_a_missing_folder_is_one_line() -> None:
    result = run_cli("ingest", "/nonexistent/landing", "--all", env=_clean_env())
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "copilot: error: landing root /nonexistent/landing is not a directory"
    ]


def test_status_does_not_start_anything(cli_env: dict[str, str]) -> None:
    run_cli("status", env=cli_env)
    data_dir = Path(cli_env["COPILOT_EMBEDDED__DATA_DIR"])
    assert not (data_dir / "postgres" / "postmaster.pid").exists()
    result = run_cli("db", "current", env=cli_env)
    assert result.returncode == 1
    assert "embedded PostgreSQL is not running: run `copilot up`" in result.stderr


def test_help_on_every_command() -> None:
    for args in ((), ("up",), ("down",), ("status",), ("generate",), ("db",), ("db", "migrate"),
                 ("db", "downgrade"), ("db", "current"), ("ingest",), ("airflow",), ("airflow", "up"),
                 ("airflow", "env")):  # fmt: skip
        result = run_cli(*args, "--help", env=_clean_env())
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage" in result.stdout
