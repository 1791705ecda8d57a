"""Daily, hourly and per-product metrics in each merchant's local time.

Loaders write the facts and, in the same transaction, queue the merchant-local
day(s) each changed transaction belongs to (its old and its new day) in
``metric_refresh_queue``. :func:`refresh_pending` drains that queue in
batches; each batch is one transaction that claims its queue rows (``FOR
UPDATE SKIP LOCKED``, deleting them), recomputes ``daily_metrics``,
``hourly_metrics`` and ``daily_product_metrics`` for exactly those days with
set-based SQL and replaces the rows that changed. A crash leaves the work
queued, never half-done; concurrent workers take disjoint batches.
:func:`refresh_range` queues a range of days first (repairs, backfills).

Queueing protocol for writers::

    INSERT INTO metric_refresh_queue (merchant_id, day) VALUES (...)
    ON CONFLICT (merchant_id, day) DO UPDATE SET queued_at = excluded.queued_at

``DO UPDATE``, not ``DO NOTHING``: when the day is already queued, the update
locks that queue row until the writer commits, so no worker can claim the day
meanwhile and compute it from a snapshot that lacks the writer's change. (A
writer queueing a day that a worker has already claimed waits for the worker
to commit and then queues the day again, whichever variant it uses.)

Metric rows exist for a day (or hour) that had any transaction of any type or
status, with zeros where nothing was sold; a day without transactions has no
rows. Definitions follow DATA_CONTRACT.md; money is in minor units of the
merchant's currency. ``computed_at`` is when a row last changed.

    from pipelines.aggregates import refresh_pending, refresh_range

    summary = refresh_pending(ctx)
    summary = refresh_range(ctx, date(2026, 3, 1), date(2026, 3, 31), ["M0001"])
"""

from pipelines.aggregates.refresh import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_WORKERS,
    AggregateSummary,
    refresh_pending,
    refresh_range,
)

__all__ = ["DEFAULT_BATCH_SIZE", "DEFAULT_WORKERS", "AggregateSummary", "refresh_pending", "refresh_range"]
