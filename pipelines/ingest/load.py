"""Load one landing file: stage with COPY, validate in SQL, quarantine, merge.

One database transaction per file: either everything the file contributes
(valid rows merged, bad rows quarantined, counts recorded) commits, or
nothing does and the file is recorded as failed with the reason. Re-running a
file is harmless: merges are idempotent upserts.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

from psycopg import sql
from sqlalchemy import Engine

from pipelines.ingest.datasets import DatasetSpec
from pipelines.ingest.readers import FileLevelError, FileReader
from pipelines.landing import LandingError, LandingFile, LandingRoot

logger = logging.getLogger(__name__)

_SYSTEM_COLUMNS = ("ingest_raw", "ingest_error")


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


def load_file(engine: Engine, root: LandingRoot, spec: DatasetSpec, file: LandingFile, run_id: uuid.UUID) -> FileResult:
    """Load ``file`` in one transaction; never raises for bad data, only records it."""
    started = time.perf_counter()
    display = root.display(file.relpath)
    file_id = uuid.uuid4()
    result = FileResult(spec.name, file.partition, display, "loaded", file_id=str(file_id))
    reader = FileReader(root, file, spec.columns, spec.required, result.warnings)
    raw = engine.raw_connection()
    try:
        conn = raw.driver_connection
        assert conn is not None
        try:
            with conn.transaction(), conn.cursor() as cur:
                cur.execute("SET LOCAL work_mem = '128MB'")
                # The file's rows and its ingestion_files row commit together, so
                # a commit lost in a crash only means the file reloads (idempotent).
                cur.execute("SET LOCAL synchronous_commit = off")
                cur.execute(
                    "INSERT INTO ingestion_files (file_id, run_id, dataset, partition, path, status) "
                    "VALUES (%s, %s, %s, %s, %s, 'running')",
                    (file_id, run_id, spec.name, file.partition, display),
                )
                result.rows_read = _stage(cur, spec, reader)
                if spec.name == "attachments":
                    _mark_missing_binaries(cur, root)
                result.rows_quarantined = _quarantine(cur, spec, run_id, file_id, display)
                result.rows_loaded = result.rows_read - result.rows_quarantined
                result.rows_changed = _merge(cur, spec, file.partition)
                cur.execute(
                    "UPDATE ingestion_files SET status = 'loaded', rows_read = %s, rows_loaded = %s, "
                    "rows_quarantined = %s, finished_at = now(), error = %s WHERE file_id = %s",
                    (
                        result.rows_read, result.rows_loaded, result.rows_quarantined,
                        "; ".join(result.warnings) or None, file_id,
                    ),
                )  # fmt: skip
        except (FileLevelError, LandingError) as exc:
            result = FileResult(
                spec.name, file.partition, display, "failed", error=f"{display}: {exc}", file_id=str(file_id)
            )
            _record_failure(conn, run_id, file_id, spec.name, file.partition, display, result.error or "")
    finally:
        raw.close()
    result.seconds = round(time.perf_counter() - started, 3)
    for warning in result.warnings:
        logger.warning("ingest.file.warning", extra={"path": display, "warning": warning})
    logger.info(
        "ingest.file.done",
        extra={k: v for k, v in result.as_dict().items() if k not in ("warnings", "partition")},
    )
    return result


def _stage(cur: Any, spec: DatasetSpec, reader: FileReader) -> int:
    columns = ["line_no", *spec.columns, *_SYSTEM_COLUMNS]
    definitions = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(c), sql.SQL("int" if c == "line_no" else "text")) for c in columns
    )
    extra = sql.SQL(", ingest_missing boolean NOT NULL DEFAULT false") if spec.name == "attachments" else sql.SQL("")
    cur.execute(sql.SQL("CREATE TEMP TABLE ingest_stage ({}{}) ON COMMIT DROP").format(definitions, extra))
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
    # Key lookups within the file (refund_of of a payment in the same file).
    cur.execute(
        sql.SQL("CREATE INDEX ON ingest_stage ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in spec.key))
    )
    if spec.name == "merchants":
        cur.execute("CREATE TEMP TABLE ingest_timezones ON COMMIT DROP AS SELECT name FROM pg_timezone_names")
    return count


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


def _quarantine(cur: Any, spec: DatasetSpec, run_id: uuid.UUID, file_id: uuid.UUID, display: str) -> int:
    checks = ", ".join(spec.checks)
    merchant_join = "LEFT JOIN merchants m ON m.merchant_id = s.merchant_id" if spec.needs_merchant else ""
    carried = "".join(f", {expr} AS {alias}" for alias, expr in spec.carry)
    # One pass computes every rule's reason next to the staged columns; the
    # quarantine and the merge both read this table, so no join is needed.
    cur.execute(
        f"""
        CREATE TEMP TABLE ingest_checked ON COMMIT DROP AS
        SELECT s.*{carried},
               CASE WHEN s.ingest_error IS NOT NULL THEN s.ingest_error
                    ELSE NULLIF(concat_ws('; ', {checks}), '') END AS ingest_reason
        FROM ingest_stage s {merchant_join} {spec.lookup}
        """
    )
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


def _merge(cur: Any, spec: DatasetSpec, partition: date) -> int:
    key = ", ".join(f"s.{k}" for k in spec.key)
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
    # Temp tables have no statistics until analysed; without them the merge
    # joins are planned for a handful of rows.
    cur.execute(sql.SQL("ANALYZE valid ({})").format(sql.SQL(", ").join(sql.Identifier(k) for k in spec.key)))
    if spec.name == "transactions":
        cur.execute(
            "CREATE TEMP TABLE ingest_changed (transaction_id text, merchant_id text, "
            "occurred_at timestamptz, old_occurred_at timestamptz, existed boolean) ON COMMIT DROP"
        )
    changed = 0
    for statement in spec.merge:
        cur.execute(statement, {"partition": partition})
        if changed == 0:
            changed = max(int(cur.rowcount), 0)
    return changed


def _record_failure(
    conn: Any, run_id: uuid.UUID, file_id: uuid.UUID, dataset: str, partition: date, display: str, error: str
) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "INSERT INTO ingestion_files (file_id, run_id, dataset, partition, path, status, error, finished_at) "
            "VALUES (%s, %s, %s, %s, %s, 'failed', %s, now())",
            (file_id, run_id, dataset, partition, display, error),
        )
