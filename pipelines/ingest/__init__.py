"""Ingest the landing zone (DATA_CONTRACT.md) into PostgreSQL.

``ingest_dataset`` loads one dataset for one partition (the Airflow task's
unit of work) or for all partitions; ``ingest`` runs the datasets in the
contract's order. Every call records an ``ingestion_runs`` row and one
``ingestion_files`` row per file with ``rows_read = rows_loaded +
rows_quarantined``. Bad rows go to ``quarantined_rows``; an unreadable file
is recorded as failed and loads nothing. Reruns never duplicate.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import text

from pipelines.context import PipelineContext
from pipelines.ingest.datasets import SPECS
from pipelines.ingest.load import FilePipeline, FileResult, sweep_work_schemas
from pipelines.landing import DATASETS, LandingFile, LandingRoot, open_root

logger = logging.getLogger(__name__)

__all__ = ["DATASETS", "DatasetSummary", "FileResult", "IngestSummary", "ingest", "ingest_dataset"]

FileCallback = Callable[[LandingFile, FileResult | None], None]


@dataclass
class DatasetSummary:
    """Per-dataset totals and per-file results of one call."""

    dataset: str
    run_id: str
    partitions: list[date] = field(default_factory=list)
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows_read(self) -> int:
        """Records read across files."""
        return sum(f.rows_read for f in self.files)

    @property
    def rows_loaded(self) -> int:
        """Records accepted across files."""
        return sum(f.rows_loaded for f in self.files)

    @property
    def rows_quarantined(self) -> int:
        """Records quarantined across files."""
        return sum(f.rows_quarantined for f in self.files)

    @property
    def failed_files(self) -> list[FileResult]:
        """Files that could not be read at all."""
        return [f for f in self.files if f.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the DAG passes between tasks)."""
        return {
            "dataset": self.dataset,
            "run_id": self.run_id,
            "partitions": [p.isoformat() for p in self.partitions],
            "rows_read": self.rows_read,
            "rows_loaded": self.rows_loaded,
            "rows_quarantined": self.rows_quarantined,
            "failed_files": len(self.failed_files),
            "seconds": self.seconds,
            "files": [f.as_dict() for f in self.files],
        }


@dataclass
class IngestSummary:
    """Every dataset of one ``ingest`` call."""

    root: str
    partition: date | None
    datasets: list[DatasetSummary] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed_files(self) -> list[FileResult]:
        """Files that failed, across datasets."""
        return [f for d in self.datasets for f in d.failed_files]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``copilot ingest --json``)."""
        return {
            "root": self.root,
            "partition": self.partition.isoformat() if self.partition else None,
            "seconds": self.seconds,
            "failed_files": len(self.failed_files),
            "datasets": [d.as_dict() for d in self.datasets],
        }


def _start_run(
    ctx: PipelineContext, root: LandingRoot, partition: date | None, trigger: str, dataset: str
) -> uuid.UUID:
    run_id = uuid.uuid4()
    with ctx.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO ingestion_runs (run_id, root, logical_date, trigger, status, stats) "
                "VALUES (:id, :root, :d, :trigger, 'running', CAST(:stats AS jsonb))"
            ),
            {
                "id": run_id,
                "root": root.uri,
                "d": partition,
                "trigger": trigger,
                "stats": f'{{"dataset": "{dataset}"}}',
            },
        )
    return run_id


def _finish_run(
    ctx: PipelineContext, run_id: uuid.UUID, summary: DatasetSummary, crash: BaseException | None = None
) -> None:
    failed = summary.failed_files
    status = "succeeded" if not failed else ("failed" if len(failed) == len(summary.files) else "partial")
    error = "; ".join(f.error or "" for f in failed) or None
    if crash is not None:
        status, error = "failed", f"{type(crash).__name__}: {crash}"
    import json

    stats = {k: v for k, v in summary.as_dict().items() if k != "files"}
    with ctx.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ingestion_runs SET status = :status, error = :error, stats = CAST(:stats AS jsonb), "
                "finished_at = now() WHERE run_id = :id"
            ),
            {"status": status, "error": error, "stats": json.dumps(stats), "id": run_id},
        )


def _sweep(ctx: PipelineContext) -> None:
    """Drop work schemas a killed process left behind (a run that is over or a day old)."""
    raw = ctx.engine.raw_connection()
    try:
        dropped = sweep_work_schemas(raw.driver_connection)
    finally:
        raw.close()
    if dropped:
        logger.info("ingest.work_schemas.swept", extra={"count": dropped})


def ingest_dataset(
    ctx: PipelineContext,
    root: str | LandingRoot,
    dataset: str,
    partition: date | None = None,
    *,
    trigger: str = "cli",
    on_file: FileCallback | None = None,
) -> DatasetSummary:
    """Load one dataset for ``partition`` (or every partition, oldest first).

    Args:
        ctx: Pipeline context (owner database connection).
        root: Landing root URI/path or an opened root.
        dataset: One of :data:`DATASETS`.
        partition: The ``dt=`` partition to load; None loads all.
        trigger: Recorded on the run (``cli``, ``airflow``, ...).
        on_file: Called before (result None) and after each file, for progress.
    """
    if dataset not in SPECS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {', '.join(DATASETS)}")
    landing = open_root(root) if isinstance(root, str) else root
    spec = SPECS[dataset]
    started = time.perf_counter()
    _sweep(ctx)
    run_id = _start_run(ctx, landing, partition, trigger, dataset)
    summary = DatasetSummary(dataset, str(run_id))
    crash: BaseException | None = None

    def done(file: LandingFile, result: FileResult) -> None:
        summary.files.append(result)
        if on_file:
            on_file(file, result)

    try:
        partitions = [partition] if partition is not None else landing.partitions(dataset)
        summary.partitions = partitions
        # Oldest partition first: a refund may point at an earlier partition's payment.
        files = [file for part in partitions for file in landing.files(dataset, part)]
        started_file = (lambda file: on_file(file, None)) if on_file else None
        FilePipeline(ctx.engine, landing, spec, run_id).run(files, on_start=started_file, on_done=done)
    except BaseException as exc:
        crash = exc
        raise
    finally:
        summary.seconds = round(time.perf_counter() - started, 3)
        _finish_run(ctx, run_id, summary, crash)
    return summary


def list_files(
    root: str | LandingRoot, partition: date | None, datasets: Sequence[str] = DATASETS
) -> list[LandingFile]:
    """Every file an ``ingest`` call would load, in load order (for progress totals)."""
    landing = open_root(root) if isinstance(root, str) else root
    files: list[LandingFile] = []
    for dataset in datasets:
        for part in [partition] if partition is not None else landing.partitions(dataset):
            files.extend(landing.files(dataset, part))
    return files


def ingest(
    ctx: PipelineContext,
    root: str | LandingRoot,
    partition: date | None = None,
    *,
    datasets: Sequence[str] = DATASETS,
    trigger: str = "cli",
    on_file: FileCallback | None = None,
) -> IngestSummary:
    """Load ``datasets`` in the contract's order (merchants first), partitions oldest first."""
    landing = open_root(root) if isinstance(root, str) else root
    unknown = [d for d in datasets if d not in SPECS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {', '.join(unknown)}; expected {', '.join(DATASETS)}")
    ordered = [d for d in DATASETS if d in datasets]
    started = time.perf_counter()
    summary = IngestSummary(landing.uri, partition)
    for dataset in ordered:
        summary.datasets.append(ingest_dataset(ctx, landing, dataset, partition, trigger=trigger, on_file=on_file))
    summary.seconds = round(time.perf_counter() - started, 3)
    return summary
