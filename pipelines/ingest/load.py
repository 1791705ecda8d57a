"""Load one landing file: stage with COPY, validate in SQL, quarantine, merge.

A file is loaded in two steps, so that a run over many files keeps two
database sessions busy (see :class:`FilePipeline`):

1. :func:`prepare_file` stages the file with COPY and evaluates every rule
   into ``ingest_checked``, in a work schema of its own (unlogged tables,
   committed so that another session can read them). Nothing the merchant
   sees changes.
2. :func:`apply_file` then, in one database transaction, re-checks the few
   rows a file still being applied could have changed (a re-delivered id, a
   refund of a payment in that file), quarantines the bad rows, merges the
   valid ones and records the counts. Either everything the file contributes
   commits, or nothing does and the file is recorded as failed with the
   reason. Re-running a file is harmless: merges are idempotent upserts.
"""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy import Engine

from pipelines.ingest.datasets import DatasetSpec
from pipelines.ingest.readers import FileLevelError, FileReader
from pipelines.landing import LandingError, LandingFile, LandingRoot
from pipelines.text.claims import INGEST_RUNS

logger = logging.getLogger(__name__)

_SYSTEM_COLUMNS = ("ingest_raw", "ingest_error")
# Work schemas are named ingest_work_<run>_<file>. While a run has any, a
# session of it holds the advisory lock (INGEST_RUNS, <run>); a sweep drops
# the schemas of runs whose lock is free (a process killed mid-run).
WORK_SCHEMA_PREFIX = "ingest_work_"
# Tries at quarantine + merge when other sessions keep storing the file's ids.
_ATTEMPTS = 3


@dataclass
class FileResult:
    """What happened to one file; ``rows_read = rows_loaded + rows_quarantined``."""

    dataset: str
    partition: date
    path: str
    status: str
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    rows_changed: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0
    file_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        data = asdict(self)
        data["partition"] = self.partition.isoformat()
        return data


@dataclass
class PreparedFile:
    """A staged and checked file waiting for :func:`apply_file` (or why it could not be read)."""

    spec: DatasetSpec
    file: LandingFile
    display: str
    file_id: uuid.UUID
    schema: str | None
    rows_read: int = 0
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    # Whether any key repeats in the file (valid or not): if none does, the
    # merge needs no DISTINCT ON.
    repeats: bool = True
    # Rows sharing a key with the file in flight while this one was checked
    # (listed in ``ingest_recheck``): checked again when it has committed.
    rechecks: int = 0


def _work_schema(run_id: uuid.UUID, file_id: uuid.UUID) -> str:
    return f"{WORK_SCHEMA_PREFIX}{_run_tag(run_id)}_{file_id.hex}"


def _key(spec: DatasetSpec) -> str:
    """The dataset's key columns of staged/checked rows ``s``, for GROUP BY and DISTINCT ON."""
    return ", ".join(f"s.{k}" for k in spec.key)


def _run_tag(run_id: uuid.UUID) -> str:
    return run_id.hex[:12]


@contextlib.contextmanager
def _run_lock(conn: Any, run_id: uuid.UUID) -> Iterator[None]:
    """Hold the run's advisory lock on ``conn`` (a session that outlives every work schema of the call)."""
    conn.execute("SELECT pg_advisory_lock_shared(%s, hashtext(%s))", (INGEST_RUNS, _run_tag(run_id)))
    conn.commit()
    try:
        yield
    finally:
        try:
            conn.execute("SELECT pg_advisory_unlock_shared(%s, hashtext(%s))", (INGEST_RUNS, _run_tag(run_id)))
            conn.commit()
        except psycopg.Error:  # a broken session drops its locks with it
            logger.warning("ingest.run_lock_not_released", exc_info=True)


def _begin_file_transaction(cur: Any, schema: str) -> None:
    cur.execute("SET LOCAL work_mem = '128MB'")
    # The file's rows and its ingestion_files row commit together, so a
    # commit lost in a crash only means the file reloads (idempotent).
    cur.execute("SET LOCAL synchronous_commit = off")
    # Unqualified ingest_stage / ingest_checked / valid are this file's.
    cur.execute(sql.SQL("SET LOCAL search_path TO {}, public").format(sql.Identifier(schema)))


def prepare_file(
    conn: Any,
    root: LandingRoot,
    spec: DatasetSpec,
    file: LandingFile,
    run_id: uuid.UUID,
    in_flight: PreparedFile | None = None,
) -> PreparedFile:
    """Stage ``file`` and evaluate every rule, in a committed work schema; never raises for bad data.

    Args:
        conn: A psycopg connection (not the one applying files).
        root: The landing root.
        spec: The file's dataset.
        file: The file.
        run_id: The ingestion run (names the work schema).
        in_flight: The file being applied meanwhile, if any: this file's rows
            that share a key with it are listed to be checked again.
    """
    started = time.perf_counter()
    file_id = uuid.uuid4()
    prepared = PreparedFile(spec, file, root.display(file.relpath), file_id, _work_schema(run_id, file_id))
    reader = FileReader(root, file, spec.columns, spec.required, prepared.warnings)
    assert prepared.schema is not None
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(prepared.schema)))
            _begin_file_transaction(cur, prepared.schema)
            prepared.rows_read = _stage(cur, spec, reader)
            if spec.name == "attachments":
                _mark_missing_binaries(cur, root)
            _check(cur, spec)
            cur.execute(f"SELECT EXISTS (SELECT FROM ingest_stage s GROUP BY {_key(spec)} HAVING count(*) > 1)")
            prepared.repeats = bool(cur.fetchone()[0])
            if in_flight is not None and in_flight.schema is not None and spec.recheck:
                previous = sql.Identifier(in_flight.schema).as_string(cur) + ".ingest_stage"
                cur.execute(
                    "CREATE UNLOGGED TABLE ingest_recheck AS SELECT s.line_no FROM ingest_stage s "
                    f"WHERE {spec.recheck.format(previous=previous)}"
                )
                prepared.rechecks = max(int(cur.rowcount), 0)
    except (FileLevelError, LandingError) as exc:
        prepared.schema = None  # rolled back with the transaction
        prepared.error = f"{prepared.display}: {exc}"
    prepared.seconds = time.perf_counter() - started
    return prepared


def apply_file(conn: Any, prepared: PreparedFile, run_id: uuid.UUID) -> FileResult:
    """Quarantine and merge a prepared file in one transaction; record it in ``ingestion_files``.

    Call it once the file that was in flight when ``prepared`` was checked
    has committed: the rows listed then are checked again first.
    """
    started = time.perf_counter()
    spec, file = prepared.spec, prepared.file
    result = FileResult(spec.name, file.partition, prepared.display, "loaded", file_id=str(prepared.file_id))
    result.warnings = prepared.warnings
    if prepared.error is not None or prepared.schema is None:
        result = FileResult(
            spec.name, file.partition, prepared.display, "failed", error=prepared.error, file_id=str(prepared.file_id)
        )
        _record_failure(conn, run_id, prepared.file_id, spec.name, file.partition, prepared.display, result.error or "")
    else:
        with conn.transaction(), conn.cursor() as cur:
            _begin_file_transaction(cur, prepared.schema)
            cur.execute(
                "INSERT INTO ingestion_files (file_id, run_id, dataset, partition, path, status) "
                "VALUES (%s, %s, %s, %s, %s, 'running')",
                (prepared.file_id, run_id, spec.name, file.partition, prepared.display),
            )
            if prepared.rechecks:
                _check_again(cur, spec, listed_only=True)
            result.rows_read = prepared.rows_read
            for attempt in range(_ATTEMPTS):
                try:
                    with conn.transaction():
                        if attempt:
                            # Another session stored ids of this file after its
                            # checks: check every row again against what is there now.
                            _check_again(cur, spec, listed_only=False)
                        result.rows_quarantined = _quarantine(cur, spec, run_id, prepared.file_id, prepared.display)
                        result.rows_changed = _merge(
                            cur, spec, file.partition, result.rows_quarantined, repeats=prepared.repeats
                        )
                    break
                except psycopg.errors.UniqueViolation:
                    if attempt + 1 == _ATTEMPTS:
                        raise
                    logger.info("ingest.file.stored_meanwhile", extra={"path": prepared.display})
            result.rows_loaded = result.rows_read - result.rows_quarantined
            cur.execute(
                "UPDATE ingestion_files SET status = 'loaded', rows_read = %s, rows_loaded = %s, "
                "rows_quarantined = %s, finished_at = now(), error = %s WHERE file_id = %s",
                (
                    result.rows_read, result.rows_loaded, result.rows_quarantined,
                    "; ".join(result.warnings) or None, prepared.file_id,
                ),
            )  # fmt: skip
    result.seconds = round(prepared.seconds + time.perf_counter() - started, 3)
    for warning in result.warnings:
        logger.warning("ingest.file.warning", extra={"path": prepared.display, "warning": warning})
    logger.info(
        "ingest.file.done",
        extra={k: v for k, v in result.as_dict().items() if k not in ("warnings", "partition")},
    )
    return result


def drop_work(conn: Any, prepared: PreparedFile | None) -> None:
    """Drop a prepared file's work schema (after it is applied and no longer a ``previous``)."""
    if prepared is None or prepared.schema is None:
        return
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(prepared.schema)))
    prepared.schema = None


def sweep_work_schemas(conn: Any) -> int:
    """Drop the work schemas of runs no live session holds (a process killed mid-run left them)."""
    dropped = 0
    with conn.cursor() as cur:
        cur.execute(
            "SELECT nspname, split_part(substr(nspname, %s), '_', 1) FROM pg_namespace WHERE starts_with(nspname, %s)",
            (len(WORK_SCHEMA_PREFIX) + 1, WORK_SCHEMA_PREFIX),
        )
        for schema, tag in cur.fetchall():
            # Taking the lock exclusively proves no session of that run is alive.
            cur.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (INGEST_RUNS, tag))
            if not cur.fetchone()[0]:
                continue
            try:
                cur.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
                conn.commit()
                dropped += 1
            finally:
                cur.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (INGEST_RUNS, tag))
                conn.commit()
    conn.commit()
    return dropped


def load_file(engine: Engine, root: LandingRoot, spec: DatasetSpec, file: LandingFile, run_id: uuid.UUID) -> FileResult:
    """Prepare and apply one file on one connection; never raises for bad data, only records it."""
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        with _run_lock(conn, run_id):
            prepared = prepare_file(conn, root, spec, file, run_id)
            try:
                return apply_file(conn, prepared, run_id)
            finally:
                drop_work(conn, prepared)
    finally:
        raw.close()


class FilePipeline:
    """Loads files in order on two sessions: the next file is prepared while this one is applied.

    Files are applied strictly in order, one transaction each, exactly as
    one at a time; only the preparing (COPY and the checks) overlaps. A file
    is prepared once every file before the one being applied has committed,
    so the only uncommitted work its checks can miss is that one file's:
    :func:`apply_file` re-checks the rows that share a key with it.
    """

    def __init__(self, engine: Engine, root: LandingRoot, spec: DatasetSpec, run_id: uuid.UUID) -> None:
        self.engine, self.root, self.spec, self.run_id = engine, root, spec, run_id

    def run(
        self,
        files: Iterable[LandingFile],
        on_start: Callable[[LandingFile], None] | None = None,
        on_done: Callable[[LandingFile, FileResult], None] | None = None,
    ) -> list[FileResult]:
        """Load ``files`` in order; ``on_start``/``on_done`` are called around each file's apply."""
        todo = list(files)
        results: list[FileResult] = []
        if len(todo) <= 1:
            # Nothing to overlap (a daily task's usual case): one session.
            for file in todo:
                if on_start:
                    on_start(file)
                results.append(load_file(self.engine, self.root, self.spec, file, self.run_id))
                if on_done:
                    on_done(file, results[-1])
            return results
        apply_raw = self.engine.raw_connection()
        prepare_raw = self.engine.raw_connection()
        apply_conn, prepare_conn = apply_raw.driver_connection, prepare_raw.driver_connection
        prepared_files: list[PreparedFile] = []  # dropped at the end whatever happens
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-prepare")

        def prepare(file: LandingFile, in_flight: PreparedFile | None) -> PreparedFile:
            prepared = prepare_file(prepare_conn, self.root, self.spec, file, self.run_id, in_flight)
            prepared_files.append(prepared)
            return prepared

        try:
            with _run_lock(apply_conn, self.run_id):
                try:
                    previous: PreparedFile | None = None
                    future: Future[PreparedFile] = pool.submit(prepare, todo[0], None)
                    for index, file in enumerate(todo):
                        prepared = future.result()
                        if index + 1 < len(todo):
                            # Everything before ``file`` has committed: the next file's
                            # checks can only miss what ``file`` itself writes.
                            future = pool.submit(prepare, todo[index + 1], prepared)
                        if on_start:
                            on_start(file)
                        result = apply_file(apply_conn, prepared, self.run_id)
                        # ``previous`` was in flight while ``file`` was prepared; not needed any more.
                        drop_work(apply_conn, previous)
                        previous = prepared
                        results.append(result)
                        if on_done:
                            on_done(file, result)
                finally:
                    pool.shutdown(wait=True)
                    for prepared in prepared_files:
                        drop_work(apply_conn, prepared)
        finally:
            prepare_raw.close()
            apply_raw.close()
        return results


def _stage(cur: Any, spec: DatasetSpec, reader: FileReader) -> int:
    columns = ["line_no", *spec.columns, *_SYSTEM_COLUMNS]
    definitions = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL("text")) for c in columns[1:])
    extra = sql.SQL(", ingest_missing boolean NOT NULL DEFAULT false") if spec.name == "attachments" else sql.SQL("")
    # line_no counts records from 2 (the header is line 1) for the COPY fast path.
    cur.execute(
        sql.SQL(
            "CREATE UNLOGGED TABLE ingest_stage (line_no int GENERATED BY DEFAULT AS IDENTITY (START WITH 2), {}{})"
        ).format(definitions, extra)
    )
    count = _stage_csv_fast(cur, spec, reader)
    if count is None:
        count = _stage_rows(cur, columns, spec, reader)
    # Key lookups within the file (refund_of of a payment in the same file).
    cur.execute(
        sql.SQL("CREATE INDEX ON ingest_stage ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in spec.key))
    )
    if spec.name == "merchants":
        cur.execute("CREATE UNLOGGED TABLE ingest_timezones AS SELECT name FROM pg_timezone_names")
    return count


def _stage_rows(cur: Any, columns: list[str], spec: DatasetSpec, reader: FileReader) -> int:
    """Parse in Python, row by row: every format, every malformed line (quarantined with its raw text)."""
    copy_sql = sql.SQL("COPY ingest_stage ({}) FROM STDIN").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )
    blank: list[None] = [None] * len(spec.columns)
    count = 0
    with cur.copy(copy_sql) as copy:
        for row in reader.rows():
            count += 1
            if row.error is not None:
                copy.write_row((row.line_no, *blank, row.raw, row.error))
            else:
                copy.write_row((row.line_no, *row.values, None, None))
    return count


# Bytes other than the CSV syntax characters all map to "a", so a quote inside
# an unquoted value (which PostgreSQL and Python's csv read differently) shows
# up as a"a; in RFC 4180 data every quote touches a delimiter, a line end or a quote.
_SYNTAX_ONLY = bytes(b if b in b',"\r\n' else ord("a") for b in range(256))


def _stage_csv_fast(cur: Any, spec: DatasetSpec, reader: FileReader) -> int | None:
    """COPY a CSV file's bytes as they are (no Python per row); None when it needs :func:`_stage_rows`.

    Falls back (rolling back to a savepoint) on anything the row-by-row path
    treats specially: a COPY error (wrong field count, bad UTF-8, NUL, bad
    gzip), a record spanning lines or a blank line (line numbers would
    differ), a quote inside an unquoted value.
    """
    warnings = len(reader.warnings)
    try:
        opened = reader.csv_chunks()
    except (FileLevelError, LandingError):
        raise
    except Exception:  # the row-by-row reader names the problem
        opened = None
    if opened is None:
        return None
    names, chunks = opened
    known = set(spec.columns)
    targets = [name if name in known else f"ingest_extra_{i}" for i, name in enumerate(names)]
    extras = [t for t in targets if t not in known]
    present = [t for t in targets if t in known]
    try:
        with cur.connection.transaction():
            for name in extras:
                cur.execute(sql.SQL("ALTER TABLE ingest_stage ADD COLUMN {} text").format(sql.Identifier(name)))
            copy_sql = sql.SQL("COPY ingest_stage ({}) FROM STDIN (FORMAT csv, FORCE_NULL ({}))").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in targets),
                sql.SQL(", ").join(sql.Identifier(t) for t in present),
            )
            newlines, tail = 0, b"\n"
            with cur.copy(copy_sql) as copy:
                for chunk in chunks:
                    newlines += chunk.count(b"\n")
                    if (tail[-2:] + chunk).translate(_SYNTAX_ONLY).find(b'a"a') >= 0:
                        raise _NeedsRowPath
                    tail = chunk
                    copy.write(chunk)
            count = int(cur.rowcount)
            if count != newlines + (0 if tail.endswith(b"\n") else 1):
                raise _NeedsRowPath
            for name in extras:
                cur.execute(sql.SQL("ALTER TABLE ingest_stage DROP COLUMN {}").format(sql.Identifier(name)))
    except Exception as exc:  # any failure: the row-by-row path decides
        if not isinstance(exc, _NeedsRowPath):
            logger.debug("ingest.file.fast_path_fallback", extra={"error": str(exc)})
        del reader.warnings[warnings:]
        return None
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    return count


class _NeedsRowPath(Exception):
    pass


def _mark_missing_binaries(cur: Any, root: LandingRoot) -> None:
    """Attachment manifests are small: check each binary exists, in Python."""
    cur.execute("SELECT line_no, path FROM ingest_stage WHERE path IS NOT NULL AND ingest_error IS NULL")
    missing = []
    for line_no, path in cur.fetchall():
        try:
            with root.open(path):
                pass
        except (LandingError, OSError):
            missing.append(line_no)
    if missing:
        cur.execute("UPDATE ingest_stage SET ingest_missing = true WHERE line_no = ANY(%s)", (missing,))


def _checked_select(spec: DatasetSpec) -> str:
    """Every staged row with each rule's reason (NULL when valid) and the carried lookups."""
    checks = ", ".join(spec.checks)
    merchant_join = "LEFT JOIN merchants m ON m.merchant_id = s.merchant_id" if spec.needs_merchant else ""
    carried = "".join(f", {expr} AS {alias}" for alias, expr in spec.carry)
    return f"""
        SELECT s.*{carried},
               CASE WHEN s.ingest_error IS NOT NULL THEN s.ingest_error
                    ELSE NULLIF(concat_ws('; ', {checks}), '') END AS ingest_reason
        FROM ingest_stage s {merchant_join} {spec.lookup}
        """


def _check(cur: Any, spec: DatasetSpec) -> None:
    # One pass computes every rule's reason next to the staged columns; the
    # quarantine and the merge both read this table, so no join is needed.
    cur.execute(f"CREATE UNLOGGED TABLE ingest_checked AS {_checked_select(spec)}")


def _check_again(cur: Any, spec: DatasetSpec, *, listed_only: bool) -> None:
    """Check again the rows listed in ``ingest_recheck`` (or every row) against what is stored now."""
    if not listed_only:
        cur.execute("TRUNCATE ingest_checked")
        cur.execute(f"INSERT INTO ingest_checked {_checked_select(spec)}")
    else:
        cur.execute("DELETE FROM ingest_checked WHERE line_no IN (SELECT line_no FROM ingest_recheck)")
        cur.execute(
            f"INSERT INTO ingest_checked {_checked_select(spec)} "
            "WHERE s.line_no IN (SELECT line_no FROM ingest_recheck)"
        )


def _quarantine(cur: Any, spec: DatasetSpec, run_id: uuid.UUID, file_id: uuid.UUID, display: str) -> int:
    dropped = (
        "'line_no' - 'ingest_raw' - 'ingest_error' - 'ingest_reason'"
        + (" - 'ingest_missing'" if spec.name == "attachments" else "")
        + "".join(f" - '{alias}'" for alias, _ in spec.carry)
    )
    cur.execute(
        f"""
        INSERT INTO quarantined_rows (run_id, file_id, dataset, path, line_no, raw_record, reason)
        SELECT %s, %s, %s, %s, c.line_no,
               COALESCE(c.ingest_raw, jsonb_strip_nulls(to_jsonb(c) - {dropped})::text), c.ingest_reason
        FROM ingest_checked c
        WHERE c.ingest_reason IS NOT NULL
        ORDER BY c.line_no
        """,
        (run_id, file_id, spec.name, display),
    )
    return int(cur.rowcount)


def _merge(cur: Any, spec: DatasetSpec, partition: date, quarantined: int, *, repeats: bool = True) -> int:
    _build_valid(cur, spec, quarantined, repeats=repeats)
    params = {"partition": partition}
    fresh = stored = 0
    if spec.fresh_merge:
        cur.execute(
            f"SELECT count(*) FILTER (WHERE {spec.fresh}), count(*) FILTER (WHERE NOT ({spec.fresh})) FROM valid v"
        )
        fresh, stored = cur.fetchone()
    changed = 0
    if fresh:
        # A unique violation here means another session stored one of these
        # ids since the file was checked: apply_file checks it again.
        for statement in spec.fresh_merge:
            cur.execute(statement, params)
            if statement is spec.fresh_merge[0]:
                changed = max(int(cur.rowcount), 0)
        if not stored:
            return changed
        # The general merge below sees only rows that had a stored version.
        cur.execute(f"CREATE TEMP TABLE valid_stored ON COMMIT DROP AS SELECT * FROM valid v WHERE NOT ({spec.fresh})")
        cur.execute("DROP TABLE valid")
        cur.execute("ALTER TABLE valid_stored RENAME TO valid")
    # Temp tables have no statistics until analysed; without them the merge
    # joins are planned for a handful of rows.
    cur.execute(sql.SQL("ANALYZE valid ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in spec.key)))
    if spec.name == "transactions":
        cur.execute(
            "CREATE TEMP TABLE ingest_changed (transaction_id text, merchant_id text, "
            "occurred_at timestamptz, old_occurred_at timestamptz, existed boolean) ON COMMIT DROP"
        )
    first = True
    for statement in spec.merge:
        cur.execute(statement, params)
        if first:
            changed += max(int(cur.rowcount), 0)
            first = False
    return changed


def _build_valid(cur: Any, spec: DatasetSpec, quarantined: int, *, repeats: bool = True) -> None:
    """Table ``valid``: the rows that passed every check, one per key (the latest version in the file).

    Most files repeat no key (``repeats`` False, found while preparing): then
    the checked rows themselves become ``valid`` (renamed, after deleting any
    quarantined ones) instead of being sorted and copied for a DISTINCT ON.
    """
    key = _key(spec)
    if repeats:
        cur.execute(
            "SELECT EXISTS (SELECT FROM ingest_checked s WHERE s.ingest_reason IS NULL "
            f"GROUP BY {key} HAVING count(*) > 1)"
        )
        repeats = bool(cur.fetchone()[0])
    if repeats:
        # The latest version of a record within the file wins (DISTINCT ON).
        cur.execute(
            f"""
            CREATE TEMP TABLE valid ON COMMIT DROP AS
            SELECT DISTINCT ON ({key}) s.*
            FROM ingest_checked s
            WHERE s.ingest_reason IS NULL
            ORDER BY {key}, {spec.order_by}
            """
        )
        return
    if quarantined:
        cur.execute("DELETE FROM ingest_checked WHERE ingest_reason IS NOT NULL")
    cur.execute("ALTER TABLE ingest_checked RENAME TO valid")


def _record_failure(
    conn: Any, run_id: uuid.UUID, file_id: uuid.UUID, dataset: str, partition: date, display: str, error: str
) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ingestion_files (file_id, run_id, dataset, partition, path, status, error, finished_at) "
            "VALUES (%s, %s, %s, %s, %s, 'failed', %s, now())",
            (file_id, run_id, dataset, partition, display, error),
        )
