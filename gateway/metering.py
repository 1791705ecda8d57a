"""Usage metering: one ``usage_records`` row per gateway request, for billing.

Recording
    The gateway calls :meth:`UsageRecorder.record` once per request (success,
    failure, refusal, cache hit). It only appends to an in-memory deque: O(1),
    no I/O, never raises. A background task started by
    :meth:`UsageRecorder.start` writes the buffer every ``flush_interval_s``
    (sooner once ``batch_size`` events are waiting) as one
    ``INSERT ... SELECT FROM unnest(...) ON CONFLICT (request_id) DO NOTHING``
    per batch, on one autocommit psycopg connection. ``request_id`` is unique,
    so a retried batch or a replayed spool file never bills twice.

When PostgreSQL is down
    A failed write puts its batch back and moves everything buffered to the
    spool: an fsync'd JSONL file in ``spool_dir``, one per process and
    start-up (``usage-<pid>-<uuid>.jsonl``), held under an exclusive
    ``flock`` while the process writes it. Writes are retried with
    exponential backoff (``flush_interval_s`` doubling up to
    ``max_backoff_s``); in between, new events go straight to the spool, so
    the events held only in memory stay those of about one flush interval
    even during a long outage. Once a write succeeds, spool files are
    replayed in batches (same idempotent insert) and each file is deleted
    only after all of its rows are committed. :meth:`UsageRecorder.start`
    replays the files earlier runs left behind; files still locked by a live
    process (another worker) are skipped.

    If the spool cannot be written either (disk full), events stay in memory
    up to ``max_buffer``; beyond that the oldest are dropped and logged at
    error level (``usage.dropped``). That, and a hard crash, are the only ways
    to lose a record.

Shutdown and crashes
    :meth:`UsageRecorder.aclose` stops the flusher, makes one last write
    attempt and spools whatever could not be written: a graceful stop loses
    nothing. A hard crash (SIGKILL, power loss) loses the events still in
    memory: those recorded since the last flush, i.e. about
    ``flush_interval_s`` of traffic (plus the batch being written, if its
    commit had not happened). A line torn by a crash mid-write is skipped at
    replay with a warning.

Rows that PostgreSQL rejects
    Strings are cut to the column widths and integers clamped before writing,
    so a batch cannot fail on one odd value. Should a batch still fail with a
    data or integrity error, its rows are written one by one and those that
    fail again are appended to ``rejected-<pid>-<uuid>.jsonl`` in
    ``spool_dir`` (never replayed automatically; ``usage.rejected`` is
    logged) instead of blocking the queue forever.

Export
    :func:`export_usage` streams ``usage_records`` of a period (optionally one
    tenant) in ``created_at`` order through a server-side cursor into CSV or
    Parquet, to a local path or ``s3://bucket/key`` (boto3, which honours
    ``AWS_ENDPOINT_URL``). :func:`billing_period` turns ``"2026-11"`` into its
    UTC ``[start, end)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import fcntl
import json
import logging
import os
import random
import re
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Final, Literal

import psycopg
from sqlalchemy.engine import URL

from core.db.engine import normalize_url
from core.errors import CopilotError, ServiceUnavailableError

logger = logging.getLogger(__name__)

SPOOL_PREFIX: Final = "usage-"
REJECTED_PREFIX: Final = "rejected-"
_SPOOL_SUFFIX: Final = ".jsonl"
_INT4_MAX: Final = 2**31 - 1
_INT8_MAX: Final = 2**63 - 1
_ERROR_MAX_CHARS: Final = 2000


@dataclass(slots=True, frozen=True, kw_only=True)
class UsageEvent:
    """What one gateway request used; becomes one ``usage_records`` row.

    Attributes:
        request_id: The request's id; unique, so a record is written at most once.
        key_id: The virtual key that made the call (None if it never authenticated).
        tenant_id: The key's tenant.
        merchant_id: The merchant the call served, when named.
        endpoint: ``"chat"`` or ``"embeddings"``.
        model: The model alias the caller asked for.
        deployment: The deployment that answered (None if none did).
        prompt_tokens: Input tokens billed.
        completion_tokens: Output tokens billed.
        cost_micros_usd: Cost in millionths of a US dollar.
        latency_ms: Time from request to last byte.
        status: ``ok``, ``error``, ``client_closed``, ``upstream_error``,
            ``rate_limited``, ``budget_exceeded``, ``invalid_request``, ...
        cache_hit: Served from the response cache.
        stream: The caller asked for a stream.
        error: Short error text, never a secret.
        created_at: When the request arrived (UTC).
    """

    request_id: uuid.UUID = field(default_factory=uuid.uuid4)
    key_id: uuid.UUID | None = None
    tenant_id: str | None = None
    merchant_id: str | None = None
    endpoint: str
    model: str
    deployment: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros_usd: int = 0
    latency_ms: int = 0
    status: str = "ok"
    cache_hit: bool = False
    stream: bool = False
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_json(self) -> str:
        """One JSON line (the spool format)."""
        data = asdict(self)
        data["request_id"] = str(self.request_id)
        data["key_id"] = str(self.key_id) if self.key_id else None
        data["created_at"] = self.created_at.isoformat()
        return json.dumps(data, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str | bytes) -> UsageEvent:
        """Parse a line written by :meth:`to_json`.

        Raises:
            ValueError: The line is not a usage event (torn, corrupted).
        """
        try:
            data = json.loads(line)
            known = {f.name for f in fields(cls)}
            values = {k: v for k, v in data.items() if k in known}
            values["request_id"] = uuid.UUID(values["request_id"])
            if values.get("key_id"):
                values["key_id"] = uuid.UUID(values["key_id"])
            created = datetime.fromisoformat(values["created_at"])
            values["created_at"] = created if created.tzinfo else created.replace(tzinfo=UTC)
            return cls(**values)
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"not a usage event: {exc}") from exc


# Column widths of usage_records (core/models/usage.py).
_WIDTHS: Final = {"tenant_id": 64, "merchant_id": 64, "endpoint": 64, "model": 128, "deployment": 128, "status": 32}


def _text(value: str | None, width: int | None) -> str | None:
    if value is None:
        return None
    cleaned = str(value).replace("\x00", "")  # PostgreSQL text cannot hold NUL
    return cleaned[:width] if width else cleaned


def _clamp(value: int, upper: int) -> int:
    return max(0, min(int(value), upper))


_COLUMNS: Final = (
    ("request_id", "uuid"),
    ("key_id", "uuid"),
    ("tenant_id", "text"),
    ("merchant_id", "text"),
    ("endpoint", "text"),
    ("model", "text"),
    ("deployment", "text"),
    ("prompt_tokens", "int4"),
    ("completion_tokens", "int4"),
    ("cost_micros_usd", "int8"),
    ("latency_ms", "int4"),
    ("status", "text"),
    ("cache_hit", "bool"),
    ("stream", "bool"),
    ("error", "text"),
    ("created_at", "timestamptz"),
)
_INSERT: Final = (
    f"INSERT INTO usage_records ({', '.join(name for name, _ in _COLUMNS)}) "
    f"SELECT * FROM unnest({', '.join(f'%s::{kind}[]' for _, kind in _COLUMNS)}) "
    "ON CONFLICT (request_id) DO NOTHING"
)


def _quoted(value: str | None) -> str:
    if value is None:
        return "NULL"
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _array(kind: str, values: list[Any]) -> str:
    """A PostgreSQL array literal of one column (cast by :data:`_INSERT`).

    Built with string joins: psycopg's list dumper costs ~20 µs of Python
    per row for these sixteen columns; this costs a few.
    """
    if kind in ("int4", "int8"):
        body = ",".join(map(str, values))
    elif kind == "uuid":
        body = ",".join(["NULL" if v is None else str(v) for v in values])
    elif kind == "bool":
        body = ",".join(["t" if v else "f" for v in values])
    elif kind == "timestamptz":
        body = ",".join(['"' + v.isoformat() + '"' for v in values])
    else:
        body = ",".join(map(_quoted, values))
    return "{" + body + "}"


def _insert_params(events: Sequence[UsageEvent]) -> list[str]:
    """Column arrays for :data:`_INSERT` (as array literals), values cut to fit the columns."""
    columns: list[list[Any]] = [[] for _ in _COLUMNS]
    for event in events:
        created = event.created_at if event.created_at.tzinfo else event.created_at.replace(tzinfo=UTC)
        row = (
            event.request_id,
            event.key_id,
            _text(event.tenant_id, _WIDTHS["tenant_id"]),
            _text(event.merchant_id, _WIDTHS["merchant_id"]),
            _text(event.endpoint, _WIDTHS["endpoint"]),
            _text(event.model, _WIDTHS["model"]),
            _text(event.deployment, _WIDTHS["deployment"]),
            _clamp(event.prompt_tokens, _INT4_MAX),
            _clamp(event.completion_tokens, _INT4_MAX),
            _clamp(event.cost_micros_usd, _INT8_MAX),
            _clamp(event.latency_ms, _INT4_MAX),
            _text(event.status, _WIDTHS["status"]),
            bool(event.cache_hit),
            bool(event.stream),
            _text(event.error, _ERROR_MAX_CHARS),
            created,
        )
        for column, value in zip(columns, row, strict=True):
            column.append(value)
    return [_array(kind, column) for (_, kind), column in zip(_COLUMNS, columns, strict=True)]


def libpq_conninfo(database_url: str | URL) -> str:
    """A libpq URI (``postgresql://...``) for psycopg from any URL our engines accept."""
    return normalize_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


class _DatabaseDown(Exception):
    """A write failed for a reason that retrying later can fix (connection, timeout, schema)."""


class _RowsRejected(Exception):
    """PostgreSQL refused the batch's data itself (a data or integrity error)."""


class UsageRecorder:
    """Buffers usage events and writes them to ``usage_records`` off the request path.

    Args:
        database_url: Owner URL of the database (any spelling
            :func:`core.db.engine.normalize_url` accepts).
        spool_dir: Folder for spool files (created if missing); shared by
            the gateway's processes on one machine.
        batch_size: Events per insert statement.
        flush_interval_s: Longest an event waits in memory before a write.
        max_buffer: Events kept in memory when neither the database nor the
            spool can take them; older ones are dropped beyond it.
        max_backoff_s: Longest wait between write attempts while the database is down.
        connect_timeout_s: libpq connect timeout (whole seconds, at least 2).
        statement_timeout_ms: Server-side limit of one insert.
        spool_scan_interval_s: How often spool files of other (dead) processes
            are looked for while the database is up.
    """

    def __init__(
        self,
        database_url: str | URL,
        *,
        spool_dir: Path,
        batch_size: int = 500,
        flush_interval_s: float = 1.0,
        max_buffer: int = 100_000,
        max_backoff_s: float = 30.0,
        connect_timeout_s: int = 5,
        statement_timeout_ms: int = 30_000,
        spool_scan_interval_s: float = 60.0,
    ) -> None:
        if batch_size < 1 or max_buffer < batch_size or flush_interval_s <= 0:
            raise ValueError("need batch_size >= 1, max_buffer >= batch_size and flush_interval_s > 0")
        self._conninfo = libpq_conninfo(database_url)
        self._spool_dir = Path(spool_dir)
        self._batch_size = batch_size
        self._flush_interval_s = flush_interval_s
        self._max_buffer = max_buffer
        self._max_backoff_s = max(max_backoff_s, flush_interval_s)
        self._connect_timeout_s = max(2, int(connect_timeout_s))
        self._statement_timeout_ms = statement_timeout_ms
        self._spool_scan_interval_s = spool_scan_interval_s

        self._buffer: deque[UsageEvent] = deque()
        self._inflight = 0
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failures = 0
        self._retry_at = 0.0
        self._next_spool_scan = 0.0
        self._spool_dirty = False
        self._spool: IO[str] | None = None
        self._spool_path: Path | None = None
        self.stats: dict[str, int] = {
            "recorded": 0,
            "written": 0,
            "spooled": 0,
            "replayed": 0,
            "rejected": 0,
            "dropped": 0,
            "write_failures": 0,
        }

    # -- request path ---------------------------------------------------

    def record(self, event: UsageEvent) -> None:
        """Queue one event for writing. O(1), no I/O, never raises."""
        try:
            self._buffer.append(event)
            self.stats["recorded"] += 1
            if self._closed:
                # A request that finished after aclose(): nobody will flush it, so spool it now.
                self._spool_after_close()
            elif len(self._buffer) >= self._batch_size:
                self._wake.set()
        except Exception:  # never fail the request over metering
            logger.exception("usage.record_failed")

    @property
    def pending(self) -> int:
        """Events recorded but not yet committed or spooled."""
        return len(self._buffer) + self._inflight

    # -- lifecycle --------------------------------------------------------

    async def start(self) -> None:
        """Replay spool files left by earlier runs, then start the background flusher."""
        if self._task is not None:
            return
        await asyncio.to_thread(self._spool_dir.mkdir, parents=True, exist_ok=True)
        async with self._lock:
            try:
                await self._replay_spool()
            except _DatabaseDown as exc:
                self._note_failure(exc)
        self._task = asyncio.create_task(self._run(), name="usage-recorder")
        logger.info("usage.recorder_started", extra={"spool_dir": str(self._spool_dir)})

    async def flush(self) -> int:
        """Write every buffered event now.

        Returns:
            The number of events committed (an event whose ``request_id`` was
            already stored counts: it is billed once either way).

        Raises:
            ServiceUnavailableError: The database cannot be reached; the events
                stay buffered (nothing is lost).
        """
        async with self._lock:
            try:
                written = await self._write_buffered()
            except _DatabaseDown as exc:
                self._note_failure(exc)
                raise ServiceUnavailableError(f"usage records not written: {exc}") from exc
            self._note_success()
            return written

    async def aclose(self) -> None:
        """Stop the flusher, write what is buffered, spool what cannot be written."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        async with self._lock:
            try:
                if self._buffer:
                    await self._write_buffered()
            except _DatabaseDown as exc:
                self._note_failure(exc)
            if self._buffer:
                await self._spill()
            await asyncio.to_thread(self._close_spool)
            await self._disconnect()
        logger.info("usage.recorder_closed", extra=dict(self.stats))

    async def __aenter__(self) -> UsageRecorder:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # -- background flusher ----------------------------------------------

    async def _run(self) -> None:
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._flush_interval_s)
            self._wake.clear()
            if self._closed:
                return
            try:
                async with self._lock:
                    await self._tick()
            except Exception:  # the flusher must outlive any bug in one tick
                logger.exception("usage.flusher_error")

    async def _tick(self) -> None:
        now = time.monotonic()
        if now >= self._retry_at:
            try:
                if self._buffer:
                    await self._write_buffered()
                if self._spool_dirty or now >= self._next_spool_scan:
                    self._next_spool_scan = now + self._spool_scan_interval_s
                    await self._replay_spool()
                self._note_success()
            except _DatabaseDown as exc:
                self._note_failure(exc)
        if self._buffer and time.monotonic() < self._retry_at:
            # The database is down: keep memory to about one interval of events.
            await self._spill()

    def _note_failure(self, exc: BaseException) -> None:
        self._failures += 1
        self.stats["write_failures"] += 1
        delay = min(self._max_backoff_s, self._flush_interval_s * 2 ** min(self._failures - 1, 16))
        delay *= random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not cryptography
        self._retry_at = time.monotonic() + delay
        logger.warning(
            "usage.db_unavailable",
            extra={"error": _short(exc), "failures": self._failures, "retry_in_s": round(delay, 2)},
        )

    def _note_success(self) -> None:
        if self._failures:
            logger.info("usage.db_recovered", extra={"after_failures": self._failures})
        self._failures = 0
        self._retry_at = 0.0

    # -- database -----------------------------------------------------------

    async def _connection(self) -> psycopg.AsyncConnection[Any]:
        if self._conn is None or self._conn.closed:
            try:
                self._conn = await psycopg.AsyncConnection.connect(
                    self._conninfo,
                    autocommit=True,
                    connect_timeout=self._connect_timeout_s,
                    options=f"-c statement_timeout={self._statement_timeout_ms}",
                    application_name="copilot-usage-recorder",
                )
            except (psycopg.Error, OSError) as exc:
                raise _DatabaseDown(_short(exc)) from exc
        return self._conn

    async def _disconnect(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def _insert(self, events: Sequence[UsageEvent]) -> int:
        """Insert one batch in one statement; returns the rows newly inserted."""
        conn = await self._connection()
        try:
            async with conn.cursor() as cursor:
                await cursor.execute(_INSERT, _insert_params(events))
                return max(cursor.rowcount, 0)
        except (psycopg.DataError, psycopg.IntegrityError) as exc:
            raise _RowsRejected(_short(exc)) from exc
        except (psycopg.Error, OSError) as exc:
            await self._disconnect()
            raise _DatabaseDown(_short(exc)) from exc

    async def _insert_isolating(self, events: Sequence[UsageEvent]) -> int:
        """Insert a batch; if PostgreSQL refuses its data, write row by row and set aside the bad rows."""
        try:
            return await self._insert(events)
        except _RowsRejected:
            pass
        inserted = 0
        bad: list[UsageEvent] = []
        for event in events:
            try:
                inserted += await self._insert([event])
            except _RowsRejected as exc:
                logger.error("usage.rejected", extra={"request_id": str(event.request_id), "error": str(exc)})
                bad.append(event)
        if bad:
            await asyncio.to_thread(self._write_rejected, bad)
        return inserted

    async def _write_buffered(self) -> int:
        """Drain the buffer in batches; on failure the batch goes back in front."""
        written = 0
        while self._buffer:
            count = min(self._batch_size, len(self._buffer))
            batch = [self._buffer.popleft() for _ in range(count)]
            self._inflight = len(batch)
            try:
                inserted = await self._insert_isolating(batch)
            except BaseException:
                self._buffer.extendleft(reversed(batch))
                raise
            finally:
                self._inflight = 0
            written += len(batch)
            self.stats["written"] += len(batch)
            logger.debug("usage.flushed", extra={"events": len(batch), "inserted": inserted})
        return written

    # -- spool ---------------------------------------------------------------

    async def _spill(self) -> None:
        """Move everything buffered to this process's spool file (fsync'd)."""
        events = list(self._buffer)
        self._buffer.clear()
        try:
            await asyncio.to_thread(self._append_spool, events)
        except OSError as exc:
            self._buffer.extendleft(reversed(events))
            overflow = len(self._buffer) - self._max_buffer
            if overflow > 0:
                for _ in range(overflow):
                    self._buffer.popleft()
                self.stats["dropped"] += overflow
                logger.error("usage.dropped", extra={"events": overflow, "error": _short(exc)})
            else:
                logger.error("usage.spool_failed", extra={"events": len(events), "error": _short(exc)})
            return
        self.stats["spooled"] += len(events)
        self._spool_dirty = True
        logger.warning("usage.spooled", extra={"events": len(events), "file": str(self._spool_path)})

    def _append_spool(self, events: Iterable[UsageEvent]) -> None:
        if self._spool is None:
            self._spool_dir.mkdir(parents=True, exist_ok=True)
            path = self._spool_dir / f"{SPOOL_PREFIX}{os.getpid()}-{uuid.uuid4().hex}{_SPOOL_SUFFIX}"
            handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open, closed in _close_spool
            # Held while this process may append: replayers skip the file until then.
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            _fsync_dir(self._spool_dir)
            self._spool, self._spool_path = handle, path
        self._spool.write("".join(event.to_json() + "\n" for event in events))
        self._spool.flush()
        os.fsync(self._spool.fileno())

    def _close_spool(self) -> None:
        if self._spool is not None:
            self._spool.close()  # releases the lock: the file is now replayable
            self._spool = None
            self._spool_path = None

    def _spool_after_close(self) -> None:
        events = list(self._buffer)
        self._buffer.clear()
        try:
            self._append_spool(events)
            self._close_spool()
            self.stats["spooled"] += len(events)
        except OSError as exc:
            self.stats["dropped"] += len(events)
            logger.error("usage.dropped", extra={"events": len(events), "error": _short(exc)})

    def _write_rejected(self, events: Sequence[UsageEvent]) -> None:
        self._spool_dir.mkdir(parents=True, exist_ok=True)
        path = self._spool_dir / f"{REJECTED_PREFIX}{os.getpid()}-{uuid.uuid4().hex}{_SPOOL_SUFFIX}"
        with open(path, "a", encoding="utf-8") as handle:
            handle.write("".join(event.to_json() + "\n" for event in events))
            handle.flush()
            os.fsync(handle.fileno())
        self.stats["rejected"] += len(events)

    async def _replay_spool(self) -> int:
        """Write every unlocked spool file to the database, deleting each once committed."""
        # Our own file too: close it (a later spill starts a new one) so it can be claimed.
        await asyncio.to_thread(self._close_spool)
        paths = await asyncio.to_thread(self._spool_files)
        replayed = 0
        for path in paths:
            handle = await asyncio.to_thread(_claim, path)
            if handle is None:
                continue
            try:
                count, torn = 0, 0
                while True:
                    lines = await asyncio.to_thread(_read_lines, handle, self._batch_size)
                    if not lines:
                        break
                    events = []
                    for line in lines:
                        try:
                            events.append(UsageEvent.from_json(line))
                        except ValueError:
                            torn += 1
                    if events:
                        await self._insert_isolating(events)
                        count += len(events)
                await asyncio.to_thread(_unlink, path)
            finally:
                await asyncio.to_thread(handle.close)
            replayed += count
            self.stats["replayed"] += count
            logger.info("usage.replayed", extra={"file": path.name, "events": count, "torn_lines": torn})
        self._spool_dirty = False
        return replayed

    def _spool_files(self) -> list[Path]:
        if not self._spool_dir.is_dir():
            return []
        return sorted(self._spool_dir.glob(f"{SPOOL_PREFIX}*{_SPOOL_SUFFIX}"))


def _claim(path: Path) -> IO[str] | None:
    """Open and lock a spool file, or None if a live process holds it (or it is gone)."""
    try:
        handle = open(path, encoding="utf-8")  # noqa: SIM115 - closed by the caller
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def _read_lines(handle: IO[str], limit: int) -> list[str]:
    lines: list[str] = []
    while len(lines) < limit:
        line = handle.readline()
        if not line:
            break
        if line.strip():
            lines.append(line)
    return lines


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):  # another replayer got there first
        path.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text[:300]


# -- export ---------------------------------------------------------------------


class UsageExportError(CopilotError):
    """A usage export cannot be made (bad period, destination or format)."""

    status = 422
    code = "usage_export"
    title = "Usage export error"


ExportFormat = Literal["csv", "parquet"]

EXPORT_COLUMNS: Final = (
    "request_id",
    "created_at",
    "tenant_id",
    "merchant_id",
    "key_id",
    "endpoint",
    "model",
    "deployment",
    "status",
    "cache_hit",
    "stream",
    "prompt_tokens",
    "completion_tokens",
    "latency_ms",
    "cost_micros_usd",
    "cost_usd",
    "error",
)
_EXPORT_SELECT: Final = (
    "SELECT request_id, created_at, tenant_id, merchant_id, key_id, endpoint, model, deployment, status, "
    "cache_hit, stream, prompt_tokens, completion_tokens, latency_ms, cost_micros_usd, error "
    "FROM usage_records WHERE created_at >= %(start)s AND created_at < %(end)s "
    "AND (%(tenant)s::text IS NULL OR tenant_id = %(tenant)s::text) "
    "ORDER BY created_at, usage_id"
)
_MICROS: Final = Decimal(1_000_000)
_PERIOD: Final = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, slots=True)
class ExportSummary:
    """What an export wrote."""

    rows: int
    cost_micros_usd: int
    destination: str
    fmt: str
    start: datetime
    end: datetime
    tenant_id: str | None

    @property
    def cost_usd(self) -> Decimal:
        """Total cost in US dollars (exact)."""
        return Decimal(self.cost_micros_usd) / _MICROS

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "rows": self.rows,
            "cost_micros_usd": self.cost_micros_usd,
            "cost_usd": str(self.cost_usd),
            "destination": self.destination,
            "format": self.fmt,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "tenant_id": self.tenant_id,
        }


def billing_period(period: str) -> tuple[datetime, datetime]:
    """``"2026-11"`` → ``(2026-11-01T00:00Z, 2026-12-01T00:00Z)``, a UTC ``[start, end)``.

    Raises:
        UsageExportError: ``period`` is not ``YYYY-MM``.
    """
    match = _PERIOD.match(period.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise UsageExportError(f"{period!r} is not a billing period (YYYY-MM)")
    year, month = int(match.group(1)), int(match.group(2))
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def _parse_s3(dest: str) -> tuple[str, str]:
    match = re.match(r"^s3://([^/]+)/(.+)$", dest)
    if not match or match.group(2).endswith("/"):
        raise UsageExportError(f"{dest!r} is not an s3://bucket/key URI")
    return match.group(1), match.group(2)


def export_usage(
    database_url: str | URL,
    *,
    start: datetime,
    end: datetime,
    tenant_id: str | None = None,
    fmt: ExportFormat = "csv",
    dest: str,
    fetch_size: int = 5_000,
    s3_client: Any | None = None,
) -> ExportSummary:
    """Export the usage records of ``[start, end)`` in ``created_at`` order.

    Rows stream through a server-side cursor ``fetch_size`` at a time, so
    memory stays bounded whatever the period. The file is written next to a
    local ``dest`` and renamed into place when complete, or to a temporary
    file uploaded to ``s3://bucket/key`` (multipart for large files).

    Args:
        database_url: Owner URL of the database.
        start: First instant included (timezone-aware).
        end: First instant excluded (timezone-aware).
        tenant_id: Only this tenant's records; None for all.
        fmt: ``csv`` or ``parquet``.
        dest: A local path or ``s3://bucket/key``.
        fetch_size: Rows per round trip and per Parquet row group batch.
        s3_client: A boto3 S3 client; by default ``boto3.client("s3")``,
            which honours ``AWS_ENDPOINT_URL`` and the usual AWS variables.

    Returns:
        Rows written and their total cost.

    Raises:
        UsageExportError: Bad arguments, or the destination cannot be written.
        ServiceUnavailableError: The database cannot be reached.
    """
    if fmt not in ("csv", "parquet"):
        raise UsageExportError(f"unknown format {fmt!r}: use csv or parquet")
    if start.tzinfo is None or end.tzinfo is None:
        raise UsageExportError("start and end must be timezone-aware")
    if end <= start:
        raise UsageExportError("end must be after start")
    is_s3 = dest.startswith("s3://")
    if is_s3:
        bucket, key = _parse_s3(dest)
        target_dir = Path(tempfile.gettempdir())
    elif "://" in dest:
        raise UsageExportError(f"unsupported destination {dest!r}: use a path or s3://bucket/key")
    else:
        final = Path(dest).expanduser()
        target_dir = final.parent if str(final.parent) else Path()
        if not target_dir.is_dir():
            raise UsageExportError(f"folder {target_dir} does not exist")

    fd, tmp_name = tempfile.mkstemp(prefix=".usage-export-", suffix=f".{fmt}", dir=target_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        rows, cost = _write_export(database_url, start, end, tenant_id, fmt, tmp, fetch_size)
        if is_s3:
            _upload(tmp, bucket, key, s3_client)
        else:
            os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    summary = ExportSummary(rows, cost, dest, fmt, start, end, tenant_id)
    logger.info("usage.exported", extra={k: v for k, v in summary.as_dict().items() if k != "cost_usd"})
    return summary


def _upload(path: Path, bucket: str, key: str, client: Any | None) -> None:
    if client is None:
        import boto3

        client = boto3.client("s3")
    try:
        client.upload_file(str(path), bucket, key)
    except Exception as exc:  # boto3 raises many unrelated types
        raise UsageExportError(f"cannot write s3://{bucket}/{key}: {_short(exc)}") from exc


def _rows(
    database_url: str | URL, start: datetime, end: datetime, tenant_id: str | None, fetch_size: int
) -> Iterator[list[tuple[Any, ...]]]:
    """Chunks of rows from a server-side cursor, in ``created_at`` order."""
    try:
        conn = psycopg.connect(libpq_conninfo(database_url), connect_timeout=10)
    except psycopg.Error as exc:
        raise ServiceUnavailableError(f"cannot reach the database: {_short(exc)}") from exc
    with conn, conn.cursor(name=f"usage_export_{uuid.uuid4().hex[:8]}") as cursor:
        cursor.itersize = fetch_size
        try:
            cursor.execute(_EXPORT_SELECT, {"start": start, "end": end, "tenant": tenant_id})
            while chunk := cursor.fetchmany(fetch_size):
                yield chunk
        except psycopg.errors.UndefinedTable as exc:
            raise UsageExportError("the database has no usage_records table: run `copilot db migrate`") from exc
        except psycopg.OperationalError as exc:
            raise ServiceUnavailableError(f"usage export failed: {_short(exc)}") from exc


def _write_export(
    database_url: str | URL,
    start: datetime,
    end: datetime,
    tenant_id: str | None,
    fmt: ExportFormat,
    path: Path,
    fetch_size: int,
) -> tuple[int, int]:
    chunks = _rows(database_url, start, end, tenant_id, fetch_size)
    if fmt == "csv":
        return _write_csv(chunks, path)
    return _write_parquet(chunks, path)


def _write_csv(chunks: Iterable[list[tuple[Any, ...]]], path: Path) -> tuple[int, int]:
    rows = cost = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(EXPORT_COLUMNS)
        for chunk in chunks:
            for row in chunk:
                (request_id, created_at, tenant, merchant, key_id, endpoint, model, deployment,
                 status, cache_hit, stream, prompt, completion, latency, micros, error) = row  # fmt: skip
                writer.writerow(
                    (
                        request_id, created_at.astimezone(UTC).isoformat(), tenant, merchant, key_id or "",
                        endpoint, model, deployment, status, str(cache_hit).lower(), str(stream).lower(),
                        prompt, completion, latency, micros, f"{Decimal(micros) / _MICROS:.6f}", error,
                    )
                )  # fmt: skip
                rows += 1
                cost += micros
    return rows, cost


def _parquet_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("request_id", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("tenant_id", pa.string()),
            ("merchant_id", pa.string()),
            ("key_id", pa.string()),
            ("endpoint", pa.string()),
            ("model", pa.string()),
            ("deployment", pa.string()),
            ("status", pa.string()),
            ("cache_hit", pa.bool_()),
            ("stream", pa.bool_()),
            ("prompt_tokens", pa.int32()),
            ("completion_tokens", pa.int32()),
            ("latency_ms", pa.int32()),
            ("cost_micros_usd", pa.int64()),
            ("cost_usd", pa.decimal128(20, 6)),
            ("error", pa.string()),
        ]
    )


def _write_parquet(chunks: Iterable[list[tuple[Any, ...]]], path: Path) -> tuple[int, int]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    rows = cost = 0
    with pq.ParquetWriter(str(path), schema, compression="zstd") as writer:
        for chunk in chunks:
            columns: list[list[Any]] = [[] for _ in range(16)]
            for row in chunk:
                for column, value in zip(columns, row, strict=True):
                    column.append(value)
            request_ids, key_ids, micros = columns[0], columns[4], columns[14]
            columns[0] = [str(v) for v in request_ids]
            columns[4] = [str(v) if v is not None else None for v in key_ids]
            data = [*columns[:15], [Decimal(m) / _MICROS for m in micros], columns[15]]
            writer.write_batch(pa.record_batch(data, schema=schema))
            rows += len(chunk)
            cost += sum(micros)
    return rows, cost
