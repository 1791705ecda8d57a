"""`copilot airflow`: the environment it builds, its process supervision, and `up` end to end."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from app.airflow_cli import (
    Supervisor,
    airflow_database_url,
    airflow_env,
    app,
    service_commands,
)
from core.config import EmbeddedSettings, Settings, get_settings
from core.errors import ConfigurationError, ServiceUnavailableError
from tests.conftest import create_database, drop_database
from tests.dags.conftest import ROOT, child_env, requires_airflow

PG_URL = "postgresql://owner:secret@db.internal:5432/copilot"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(embedded=EmbeddedSettings(data_dir=tmp_path / "data"))


def test_airflow_env_binds_loopback_and_points_at_the_repo(settings: Settings) -> None:
    env = airflow_env(settings, PG_URL, port=18123)
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__API__PORT"] == "18123"
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:18123"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18123/execution/"
    assert Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) == ROOT / "dags"
    assert (Path(env["AIRFLOW__CORE__DAGS_FOLDER"]) / "merchant_daily.py").is_file()
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert Path(env["AIRFLOW_HOME"]) == settings.data_dir / "airflow"
    assert env["COPILOT_EMBEDDED__DATA_DIR"] == str(settings.data_dir)


def test_airflow_metadata_database_is_postgres_with_psycopg(settings: Settings) -> None:
    env = airflow_env(settings, PG_URL)
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC"):
        url = make_url(env[key])
        # One driver for sync and async: Airflow would otherwise derive an asyncpg URL.
        assert url.drivername == "postgresql+psycopg", key
        assert (url.host, url.database, url.password) == ("db.internal", "copilot", "secret")


def test_airflow_database_sits_next_to_the_project_database() -> None:
    embedded = make_url(airflow_database_url("postgresql+psycopg://postgres@/copilot?host=/tmp/x/postgres"))
    assert (embedded.database, embedded.query["host"], embedded.username) == ("airflow", "/tmp/x/postgres", "postgres")
    assert make_url(airflow_database_url(PG_URL)).database == "airflow"


def test_api_server_command_binds_loopback() -> None:
    commands = service_commands(Path("/venv/bin/airflow"), 18123)
    assert set(commands) == {"api-server", "scheduler", "dag-processor"}
    api = commands["api-server"]
    assert api[api.index("--host") + 1] == "127.0.0.1" and api[api.index("--port") + 1] == "18123"


def _stat(pid: int | str) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name: state, ppid, pgrp, session, ..."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def test_supervisor_reports_the_first_death_and_stops_the_rest_with_their_children(tmp_path: Path) -> None:
    # "sleeper" starts a grandchild (like the scheduler's task workers) and waits.
    sleeper = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    crasher = "import sys, time; time.sleep(1); print('config error: no such table', flush=True); sys.exit(3)"
    commands = {"sleeper": [sys.executable, "-c", sleeper], "crasher": [sys.executable, "-c", crasher]}
    supervisor = Supervisor(commands, {"PATH": "/usr/bin:/bin"}, tmp_path / "logs")
    with supervisor:
        supervisor.start()
        died = supervisor.wait(poll_s=0.1)
        message = supervisor.death_message(died)
        grandchild = int((tmp_path / "logs" / "sleeper.log").read_text().split()[0])
        assert _alive(grandchild)
    assert died.name == "crasher"
    assert message == (
        f"airflow crasher exited with code 3 (config error: no such table); see {tmp_path / 'logs' / 'crasher.log'}"
    )
    sleeper_process = supervisor.children[0].process
    assert sleeper_process is not None and sleeper_process.returncode is not None
    deadline = time.monotonic() + 5
    while _alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(grandchild)


@pytest.fixture
def cli_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for key in ("COPILOT_DATABASE__URL", "COPILOT_REDIS__URL", "COPILOT_ENVIRONMENT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("COPILOT_EMBEDDED__DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_env_prints_shell_exports_and_creates_the_database(cli_settings: None, pg_server_url: str) -> None:
    name = f"airflow_env_{uuid.uuid4().hex[:8]}"
    url = make_url(pg_server_url).set(database=name).render_as_string(hide_password=False)
    try:
        result = CliRunner().invoke(app, ["env", "--port", "18124", "--database-url", url])
        assert result.exit_code == 0, result.output
        exports = dict(shlex.split(line)[1].split("=", 1) for line in result.output.splitlines())
        assert exports == airflow_env(get_settings(), url, port=18124)
        # The database now exists: creating it again is a no-op.
        assert CliRunner().invoke(app, ["env", "--database-url", url]).exit_code == 0
    finally:
        drop_database(pg_server_url, name)


def test_up_refuses_production(cli_settings: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPILOT_ENVIRONMENT", "production")
    monkeypatch.setenv("COPILOT_DATABASE__URL", PG_URL)
    monkeypatch.setenv("COPILOT_REDIS__URL", "redis://cache:6379/0")
    monkeypatch.setenv("COPILOT_DATABASE__APP_PASSWORD", "a-real-secret")
    monkeypatch.setenv("COPILOT_GATEWAY__KEY_PEPPER", "a-server-pepper")
    result = CliRunner().invoke(app, ["up"])
    assert isinstance(result.exception, ConfigurationError)
    assert "local development" in str(result.exception)


@requires_airflow
def test_up_refuses_a_busy_port(cli_settings: None) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(app, ["up", "--port", str(port)])
    assert isinstance(result.exception, ServiceUnavailableError)
    assert f"port {port} on 127.0.0.1 is in use" in str(result.exception)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as in /proc/net/tcp*) of sockets listening on ``port``."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":  # 0A = LISTEN
                found.append(address)
    return found


def _processes() -> dict[int, list[str]]:
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(entry.name)) is not None and fields[0] != "Z":
            found[int(entry.name)] = fields
    return found


def _sessions_alive(session_ids: set[int]) -> list[int]:
    return [pid for pid, fields in _processes().items() if int(fields[3]) in session_ids]


def _children(pid: int) -> set[int]:
    return {child for child, fields in _processes().items() if int(fields[1]) == pid}


def _get_json(url: str) -> dict[str, object] | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read())  # type: ignore[no-any-return]
    except OSError:
        return None


@requires_airflow
@pytest.mark.slow
@pytest.mark.timeout(400)
def test_up_serves_the_dags_on_loopback_and_stops_cleanly_on_ctrl_c(
    airflow_settings: Settings, pg_server_url: str, database_url: str
) -> None:
    """`copilot airflow up` as a data engineer runs it: UI answers, DAG processor parsed our DAGs, Ctrl-C stops all."""
    name = f"airflow_up_{uuid.uuid4().hex[:8]}"
    metadata_url = create_database(pg_server_url, name)
    port = _free_port()
    env = child_env(airflow_settings, metadata_url, COPILOT_DATABASE__URL=database_url)
    log = Path(env["AIRFLOW_HOME"]) / f"up-{port}.out"
    log.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-c", "from app.airflow_cli import app; app(prog_name='copilot airflow')"]
    with open(log, "wb") as out:
        up = subprocess.Popen(
            [*command, "up", "--port", str(port), "--database-url", metadata_url],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            # A real Ctrl-C even when pytest itself runs with SIGINT ignored (a background CI job).
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    sessions: set[int] = set()
    started = time.monotonic()
    try:
        deadline = time.monotonic() + 240  # metadata migration, then three Airflow processes start
        while "Airflow UI:" not in log.read_text() and time.monotonic() < deadline:
            assert up.poll() is None, log.read_text()
            time.sleep(1)
        assert f"Airflow UI: http://127.0.0.1:{port}" in log.read_text(), log.read_text()
        assert "warning" not in log.read_text()  # the project database is migrated
        ui_after = time.monotonic() - started
        sessions = _children(up.pid)
        assert len(sessions) == 3

        dags: dict[str, object] = {}
        deadline = time.monotonic() + 60  # the DAG processor's first parse
        while time.monotonic() < deadline:
            listing = _get_json(f"http://127.0.0.1:{port}/api/v2/dags")
            dags = {d["dag_id"]: d for d in (listing or {}).get("dags", [])}  # type: ignore[attr-defined]
            if {"merchant_daily", "merchant_backfill"} <= set(dags):
                break
            time.sleep(2)
        assert {"merchant_daily", "merchant_backfill"} <= set(dags), log.read_text()
        daily = dags["merchant_daily"]
        assert {t["name"] for t in daily["tags"]} == {"merchant-copilot", "ingest"}  # type: ignore[index]
        assert daily["last_parsed_time"] is not None  # type: ignore[index]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as page:
            assert page.status == 200 and page.headers.get_content_type() == "text/html"  # the UI, no login
        # Only loopback: 0100007F is 127.0.0.1 in /proc/net/tcp.
        assert _listeners(port) == ["0100007F"]

        listed_after = time.monotonic() - started
        up.send_signal(signal.SIGINT)
        assert up.wait(timeout=90) == 0, log.read_text()
        stop_s = time.monotonic() - started - listed_after
        print(f"airflow up: UI after {ui_after:.0f}s, DAGs listed after {listed_after:.0f}s, stopped in {stop_s:.0f}s")
        assert "Airflow stopped." in log.read_text()
        assert _sessions_alive(sessions) == []
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        for pid in _sessions_alive(sessions):  # only processes of the sessions this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        drop_database(pg_server_url, name)
