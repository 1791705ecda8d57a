"""Drain ``metric_refresh_queue``: recompute the metrics of every queued merchant-day."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from sqlalchemy import Connection, Engine

from core.errors import ConfigurationError
from pipelines.aggregates import _sql
from pipelines.context import PipelineContext

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 2000
DEFAULT_WORKERS = 2


@dataclass
class AggregateSummary:
    """What a refresh did.

    Attributes:
        merchant_days: Queued merchant-days recomputed by this call.
        batches: Transactions committed (one per batch of merchant-days).
        daily_rows: ``daily_metrics`` rows written, new or changed (identical rows are kept as they are).
        hourly_rows: ``hourly_metrics`` rows written.
        product_rows: ``daily_product_metrics`` rows written.
        deleted_rows: Stored rows of all three tables removed because they changed or lost their data.
        seconds: Wall-clock duration.
    """

    merchant_days: int = 0
    batches: int = 0
    daily_rows: int = 0
    hourly_rows: int = 0
    product_rows: int = 0
    deleted_rows: int = 0
    seconds: float = 0.0

    @classmethod
    def combine(cls, parts: Iterable[AggregateSummary]) -> AggregateSummary:
        """Sum the counts of several workers' summaries (``seconds`` is left at 0)."""
        total = cls()
        for part in parts:
            for name in ("merchant_days", "batches", "daily_rows", "hourly_rows", "product_rows", "deleted_rows"):
                setattr(total, name, getattr(total, name) + getattr(part, name))
        return total

    def as_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (Airflow passes it through XCom)."""
        out = asdict(self)
        out["seconds"] = round(self.seconds, 3)
        return out


def refresh_pending(
    ctx: PipelineContext, *, batch_size: int = DEFAULT_BATCH_SIZE, workers: int = DEFAULT_WORKERS
) -> AggregateSummary:
    """Recompute daily, hourly and product metrics of every queued merchant-day.

    Each batch of up to ``batch_size`` merchant-days is claimed (``FOR UPDATE
    SKIP LOCKED``) and its queue rows deleted, and its metric rows are
    recomputed and replaced where they changed, all in one transaction: a
    crash leaves the batch queued, never half-done, and concurrent callers (or
    this call's own ``workers`` threads, one connection each) take disjoint
    batches. Returns when no unclaimed queue row is left.

    Args:
        ctx: Pipeline context; ``ctx.engine`` must not be subject to row-level security.
        batch_size: Merchant-days per transaction; a batch of 2000 takes a few
            seconds, keep it well within the configured statement timeout.
        workers: Batches processed in parallel, each on its own connection
            (the database does the work: about one per database core).

    Raises:
        ConfigurationError: If the batch role is subject to row-level security.
        ValueError: If ``batch_size`` or ``workers`` is not positive.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if workers < 1:
        raise ValueError(f"workers must be positive, got {workers}")
    started = time.perf_counter()
    engine = ctx.engine
    _check_sees_every_merchant(engine)
    if workers == 1:
        summary = _drain(engine, batch_size)
    else:
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="aggregates") as pool:
            futures = [pool.submit(_drain, engine, batch_size) for _ in range(workers)]
            summary = AggregateSummary.combine(f.result() for f in futures)
    summary.seconds = time.perf_counter() - started
    logger.info("aggregates.refreshed", extra=summary.as_dict())
    return summary


def refresh_range(
    ctx: PipelineContext,
    start: date,
    end: date,
    merchant_ids: Sequence[str] | None = None,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    workers: int = DEFAULT_WORKERS,
) -> AggregateSummary:
    """Queue every merchant-local day from ``start`` to ``end`` (inclusive) and refresh.

    For repairs and backfills: days without transactions end up with no
    metric rows. The queue is then drained by :func:`refresh_pending`, so the
    summary also counts any other day that was already queued; a day held by a
    concurrent worker is re-queued once that worker commits and refreshed here.

    Args:
        ctx: Pipeline context.
        start: First local day.
        end: Last local day (inclusive).
        merchant_ids: Merchants to refresh; None means every merchant.
        batch_size: Merchant-days per transaction.
        workers: Batches processed in parallel.

    Raises:
        ValueError: If ``end`` is before ``start``.
    """
    if end < start:
        raise ValueError(f"end {end} is before start {start}")
    params = {
        "start": start,
        "end": end,
        "all_merchants": merchant_ids is None,
        "merchant_ids": list(merchant_ids) if merchant_ids is not None else None,
    }
    with ctx.engine.begin() as conn:
        queued = conn.execute(_sql.ENQUEUE_RANGE, params).rowcount
    logger.info("aggregates.range_queued", extra={"start": str(start), "end": str(end), "merchant_days": queued})
    return refresh_pending(ctx, batch_size=batch_size, workers=workers)


def _drain(engine: Engine, batch_size: int) -> AggregateSummary:
    """Refresh batches, one transaction each, until no unclaimed queue row is left."""
    summary = AggregateSummary()
    while True:
        with engine.begin() as conn:
            if not _refresh_batch(conn, batch_size, summary):
                return summary


def _refresh_batch(conn: Connection, batch_size: int, summary: AggregateSummary) -> bool:
    """Claim and recompute one batch in ``conn``'s transaction; False when none is left."""
    conn.execute(_sql.BATCH_SETTINGS)
    claimed = conn.execute(_sql.CLAIM, {"limit": batch_size}).all()
    if not claimed:
        return False
    params = {"merchant_ids": [row.merchant_id for row in claimed], "days": [row.day for row in claimed]}
    for create in _sql.CREATE_STAGES:
        conn.execute(create)
    conn.execute(_sql.COMPUTE, params)
    deleted = sum(conn.execute(_sql.DELETE_STALE, params).one())
    daily, hourly, product = conn.execute(_sql.INSERT_MISSING).one()
    summary.merchant_days += len(claimed)
    summary.batches += 1
    summary.daily_rows += daily
    summary.hourly_rows += hourly
    summary.product_rows += product
    summary.deleted_rows += deleted
    logger.debug(
        "aggregates.batch_refreshed",
        extra={"merchant_days": len(claimed), "daily_rows": daily, "hourly_rows": hourly, "product_rows": product},
    )
    return True


def _check_sees_every_merchant(engine: Engine) -> None:
    with engine.connect() as conn:
        if conn.execute(_sql.RLS_ACTIVE).scalar_one():
            raise ConfigurationError(
                "the aggregate refresh needs a database role that row-level security does not apply to "
                "(the schema owner with BYPASSRLS, or a superuser); with RLS it would see no transactions"
            )
