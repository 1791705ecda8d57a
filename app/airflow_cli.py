"""``copilot airflow ...``: run Airflow locally on the project's configuration.

``up`` starts the API server (the UI), the scheduler (LocalExecutor) and the
DAG processor in the foreground, with the metadata in a database named
``airflow`` on the project's PostgreSQL server (the embedded one unless
``COPILOT_DATABASE__URL`` is set). ``env`` prints the same configuration as
``export`` lines, so any ``airflow`` command can run against it.

``app`` never imports Airflow (import-linter forbids it): everything goes
through the ``airflow`` executable installed next to this Python
(``uv sync --group airflow``).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated

import typer

from core.config import Environment, Settings, get_settings, process_environment
from core.errors import ConfigurationError, CopilotError, ServiceUnavailableError

API_HOST = "127.0.0.1"  # never 0.0.0.0: the UI below has no login
DEFAULT_PORT = 8080
AIRFLOW_DATABASE = "airflow"
DAGS_FOLDER = Path(__file__).resolve().parents[1] / "dags"
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0

app = typer.Typer(
    help="Run Airflow (UI, scheduler, DAG processor) on the project's configuration.",
    no_args_is_help=True,
)


def airflow_env(settings: Settings, db_url: str, *, port: int = DEFAULT_PORT) -> dict[str, str]:
    """The variables every Airflow process of this project runs with.

    Args:
        settings: Project settings; Airflow's home is ``<data_dir>/airflow``.
        db_url: The Airflow metadata database (PostgreSQL, any driver spelling).
        port: The API server's port on 127.0.0.1.
    """
    from core.db.engine import normalize_url

    url = normalize_url(db_url).render_as_string(hide_password=False)
    base_url = f"http://{API_HOST}:{port}"
    return {
        "AIRFLOW_HOME": str(settings.data_dir / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS_FOLDER),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        # LocalExecutor keeps up to this many worker processes (default 32); our DAGs run one task at a time.
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__AUTH_MANAGER": "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        # Local development only (`up` refuses production): everyone is admin, no login.
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        # Workers report task state to the API server's execution API.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
        # psycopg 3 is sync and async; left unset, Airflow would derive an asyncpg URL.
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC": url,
        "AIRFLOW__API__HOST": API_HOST,
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__BASE_URL": base_url,
        # Tasks run from Airflow's processes: pin the embedded data folder whatever their cwd.
        "COPILOT_EMBEDDED__DATA_DIR": str(settings.data_dir),
    }


def airflow_database_url(project_url: str) -> str:
    """The ``airflow`` database on the same server as the project's database."""
    from core.db.engine import normalize_url

    return normalize_url(project_url).set(database=AIRFLOW_DATABASE).render_as_string(hide_password=False)


def project_database_url(settings: Settings, *, start: bool) -> str:
    """The configured database URL, else the embedded server's (started when ``start``)."""
    if settings.database.url is not None:
        return settings.database.url.get_secret_value()
    from core.embedded import embedded_services

    postgres, _ = embedded_services(settings)
    url = postgres.start() if start else postgres.url()
    if url is None:
        raise ServiceUnavailableError(
            "embedded PostgreSQL is not running: run `copilot up` or set COPILOT_DATABASE__URL"
        )
    return url


def ensure_database(url: str) -> None:
    """Create the database of ``url`` unless it exists (through the server's ``postgres`` database)."""
    from sqlalchemy import create_engine, pool, text
    from sqlalchemy.exc import SQLAlchemyError

    from core.db.engine import normalize_url
    from core.logging import redact

    target = normalize_url(url)
    name = target.database
    if not name:
        raise ConfigurationError(f"the Airflow database URL names no database: {redact(url)}")
    engine = create_engine(target, poolclass=pool.NullPool)
    try:
        with engine.connect():
            return
    except SQLAlchemyError:
        pass  # missing (or unreachable: the next connection says which)
    finally:
        engine.dispose()
    admin = create_engine(target.set(database="postgres"), poolclass=pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            if conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).first() is None:
                conn.execute(text(f"CREATE DATABASE {conn.dialect.identifier_preparer.quote(name)}"))
    except SQLAlchemyError as exc:
        detail = " ".join(str(getattr(exc, "orig", None) or exc).split())
        raise ServiceUnavailableError(f"cannot create the Airflow database {name!r} ({redact(url)}): {detail}") from exc
    finally:
        admin.dispose()


def airflow_executable() -> Path:
    """The ``airflow`` script of this virtual environment."""
    path = Path(sys.executable).with_name("airflow")
    if not path.exists():
        raise ConfigurationError(
            "Airflow is not installed in this environment: run `uv sync --group airflow` "
            "(then `uv run --group airflow copilot airflow ...`)"
        )
    return path


def migrate_metadata(airflow: Path, env: Mapping[str, str], log_path: Path) -> None:
    """Run ``airflow db migrate``; on failure raise with the last line of its output."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        result = subprocess.run(  # noqa: S603 (our venv's airflow, fixed arguments)
            [str(airflow), "db", "migrate"], env=dict(env), stdout=log, stderr=subprocess.STDOUT, check=False
        )
    if result.returncode != 0:
        raise CopilotError(f"`airflow db migrate` failed ({_last_line(log_path)}); see {log_path}")


def service_commands(airflow: Path, port: int) -> dict[str, list[str]]:
    """The Airflow processes ``up`` runs, by name."""
    return {
        "api-server": [str(airflow), "api-server", "--host", API_HOST, "--port", str(port)],
        "scheduler": [str(airflow), "scheduler"],
        "dag-processor": [str(airflow), "dag-processor"],
    }


@dataclass
class Child:
    """One supervised process and where its output goes."""

    name: str
    argv: list[str]
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)


class Supervisor:
    """Start processes in their own sessions, watch them, stop them (and their children) together.

    Each process leads a new session, so a terminal's Ctrl-C reaches only us
    and :meth:`stop` can signal each process group as a whole (the scheduler's
    task workers, the API server's uvicorn workers).
    """

    def __init__(self, commands: Mapping[str, list[str]], env: Mapping[str, str], log_dir: Path) -> None:
        self.children = [Child(name, argv, log_dir / f"{name}.log") for name, argv in commands.items()]
        self.env = dict(env)
        self.log_dir = log_dir

    def start(self) -> None:
        """Start every process (output appended to ``<log_dir>/<name>.log``)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for child in self.children:
            child._log = open(child.log_path, "ab")  # noqa: SIM115 (closed in stop())
            child.process = subprocess.Popen(  # noqa: S603 (our commands)
                child.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=child._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exited(self) -> Child | None:
        """The first process that has exited, if any."""
        for child in self.children:
            if child.process is not None and child.process.poll() is not None:
                return child
        return None

    def wait(self, poll_s: float = 0.5) -> Child:
        """Block until a process exits and return it."""
        while (child := self.exited()) is None:
            time.sleep(poll_s)
        return child

    def wait_until_ready(self, url: str, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Poll ``url`` until it answers 200; raise when a process dies or time runs out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if (child := self.exited()) is not None:
                raise CopilotError(self.death_message(child))
            with (
                contextlib.suppress(OSError, urllib.error.URLError),
                urllib.request.urlopen(url, timeout=2) as response,  # noqa: S310 (http://127.0.0.1)
            ):
                if response.status == 200:
                    return
            time.sleep(0.5)
        raise CopilotError(f"Airflow did not answer at {url} within {timeout_s:.0f}s; see the logs in {self.log_dir}")

    def death_message(self, child: Child) -> str:
        """One line saying which process exited, how, and where its log is."""
        assert child.process is not None
        code = child.process.returncode
        how = f"exited with code {code}" if code >= 0 else f"was killed by {_signal_name(-code)}"
        return f"airflow {child.name} {how} ({_last_line(child.log_path)}); see {child.log_path}"

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM every process group, SIGKILL what is left after ``timeout_s``."""
        started = [c for c in self.children if c.process is not None]
        try:
            for child in started:
                _signal_group(child, signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            for child in started:
                assert child.process is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: stop waiting, kill below
        finally:
            for child in started:
                # Also reaps workers left behind by a leader that already exited.
                _signal_group(child, signal.SIGKILL)
                assert child.process is not None
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.process.wait(timeout=5)
                if child._log is not None:
                    child._log.close()

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _signal_group(child: Child, signum: int) -> None:
    assert child.process is not None
    # The group id is the leader's pid (start_new_session); it was ours to start.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, signum)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _last_line(path: Path) -> str:
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return "no output"
    return " ".join(lines[-1].split())[:200] if lines else "no output"


def _schema_hint(project_url: str) -> str | None:
    """A warning when the project's schema is behind (DAG tasks would fail on missing tables)."""
    from sqlalchemy import create_engine, pool
    from sqlalchemy.exc import SQLAlchemyError

    from core.db.engine import normalize_url
    from core.db.migrate import current_revision, head_revision

    engine = create_engine(normalize_url(project_url), poolclass=pool.NullPool)
    try:
        current = current_revision(engine)
    except SQLAlchemyError:
        return "warning: cannot read the project database's schema revision; DAG tasks may fail"
    finally:
        engine.dispose()
    if current != head_revision():
        return "warning: the project database is not migrated to head: run `copilot db migrate` before running DAGs"
    return None


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((API_HOST, port))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM like Ctrl-C, so a supervisor's stop also stops the children."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _port_option(value: int) -> int:
    if not 1 <= value <= 65535:
        raise typer.BadParameter("must be between 1 and 65535")
    return value


PortOption = Annotated[int, typer.Option(help="API server (UI) port on 127.0.0.1.", callback=_port_option)]
DatabaseOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        help="Airflow metadata database (PostgreSQL); default: a database named 'airflow' on the project's server.",
    ),
]


def _resolve(settings: Settings, database_url: str | None, *, start: bool) -> str:
    url = database_url or airflow_database_url(project_database_url(settings, start=start))
    ensure_database(url)
    return url


@app.command()
def up(port: PortOption = DEFAULT_PORT, database_url: DatabaseOption = None) -> None:
    """Run Airflow in the foreground: UI/API server, scheduler and DAG processor. Ctrl-C stops it."""
    settings = get_settings()
    if settings.environment is Environment.PRODUCTION:
        raise ConfigurationError(
            "`copilot airflow up` is a local development setup (no login); deploy Airflow for production"
        )
    airflow = airflow_executable()
    if not _port_is_free(port):
        raise ServiceUnavailableError(f"port {port} on {API_HOST} is in use: stop what uses it or pass --port")
    project_url = project_database_url(settings, start=True)
    metadata_url = database_url or airflow_database_url(project_url)
    ensure_database(metadata_url)
    env = {**process_environment(), **airflow_env(settings, metadata_url, port=port)}
    log_dir = Path(env["AIRFLOW_HOME"]) / "logs" / "services"
    with _sigterm_as_interrupt():
        try:
            typer.echo("migrating the Airflow metadata database ...")
            migrate_metadata(airflow, env, log_dir / "db-migrate.log")
            with Supervisor(service_commands(airflow, port), env, log_dir) as supervisor:
                supervisor.start()
                base_url = env["AIRFLOW__API__BASE_URL"]
                supervisor.wait_until_ready(f"{base_url}/api/v2/monitor/health")
                typer.echo(f"Airflow UI: {base_url}  (local admin, no login)")
                typer.echo(f"DAGs: {DAGS_FOLDER}  (new DAGs start paused: unpause them in the UI)")
                typer.echo(f"logs: {log_dir}")
                if (hint := _schema_hint(project_url)) is not None:
                    typer.echo(hint)
                typer.echo("Ctrl-C stops Airflow.")
                died = supervisor.wait()
                raise CopilotError(supervisor.death_message(died))
        except KeyboardInterrupt:
            typer.echo("Airflow stopped.")


@app.command("env")
def env_command(port: PortOption = DEFAULT_PORT, database_url: DatabaseOption = None) -> None:
    """Print `export` lines for running any `airflow` command on this configuration.

    Use: eval "$(copilot airflow env)". Creates the 'airflow' database if it is
    missing; the embedded PostgreSQL must be running (`copilot up`).
    """
    settings = get_settings()
    for key, value in sorted(airflow_env(settings, _resolve(settings, database_url, start=False), port=port).items()):
        typer.echo(f"export {key}={shlex.quote(value)}")
