"""The SQL of the aggregate refresh: claim a batch of merchant-days, recompute it.

The batch travels as two parallel arrays, ``:merchant_ids`` and ``:days``, so
one statement handles thousands of merchant-days set-based.

Day windows. A merchant-local day ``d`` in zone ``tz`` is the set of instants
whose local date is ``d``. ``d::timestamp AT TIME ZONE tz`` is the start of
that set in almost every zone, but not all: where a DST change happens at
local midnight (Atlantic/Azores falls back from 01:00 to 00:00, so 00:xx
happens twice) PostgreSQL resolves the ambiguous midnight to the *later*
instant, and the plain window would move the first 00:xx hour to ``d - 1``.
So the index range scan uses the window widened by three hours on each side
(a superset for every IANA zone from 1990 to 2035, checked against
``pg_timezone_names``) and the exact membership test is the local date
itself; the extra rows read are a few night-time transactions. The local
hour comes from the same ``occurred_at AT TIME ZONE tz``, so both occurrences
of a repeated autumn hour merge into one hour and the skipped spring hour
has no row.

Writing. A batch is computed into three temporary staging tables, then
each metric table is reconciled with its staging table on the batch's
merchant-days: stored rows that differ from (or are missing in) the staging
table are deleted, then staged rows not stored are inserted. The result is
the same as delete-and-insert, but an identical row is never rewritten, so
re-running a partition whose data did not change writes almost nothing and
``computed_at`` says when a row last changed.
"""

from __future__ import annotations

from sqlalchemy import text

# A batch aggregates a few hundred thousand rows: keep its hashes and
# materialised CTEs in memory instead of spilling to disk.
BATCH_SETTINGS = text("SET LOCAL work_mem = '128MB'")

# Claims a batch by deleting its queue rows (the deletion commits with the
# recomputed metrics or not at all). Rows another worker holds are skipped,
# never waited for, so concurrent workers take disjoint batches; a loader
# re-queueing a claimed day waits for us to commit and then queues it afresh
# (see the package docstring). Ordered by key so one merchant's days tend to
# share a batch.
CLAIM = text(
    """
    WITH claimed AS (
        SELECT merchant_id, day
        FROM metric_refresh_queue
        ORDER BY merchant_id, day
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    DELETE FROM metric_refresh_queue q
    USING claimed c
    WHERE q.merchant_id = c.merchant_id AND q.day = c.day
    RETURNING q.merchant_id, q.day
    """
)

_METRICS = (
    "currency",
    "gross_sales_minor",
    "refunds_minor",
    "net_sales_minor",
    "transactions",
    "tips_minor",
    "units_sold",
    "unique_customers",
    "refund_count",
    "failed_count",
)
_DAILY = ("merchant_id", "day"), (*_METRICS, "payment_methods")
_HOURLY = ("merchant_id", "day", "hour"), _METRICS
_PRODUCT = ("merchant_id", "day", "product_id"), ("currency", "units_sold", "gross_sales_minor", "transactions")

_BATCH = "unnest(CAST(:merchant_ids AS text[]), CAST(:days AS date[])) AS c(merchant_id, day)"


def _cols(spec: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    return ", ".join((*spec[0], *spec[1]))


# One statement computes the rows of all three tables into the staging
# tables, from one scan of the batch's transactions (``tx``) and one join to
# their items (``items``). Hours are aggregated first and days are sums of
# their hours, except distinct customers, which are counted per day. The
# currency rides along with every row so that no step joins back to
# ``batch`` (such joins were planned as sorts on text keys).
#
# A day (hour) has a row when it had any transaction of any type or status,
# so a day with only failed payments reads as "open, nothing sold" and a day
# with only a refund shows negative net sales; a day without transactions has
# no row. A product-day has a row when a successful payment sold it.
COMPUTE = text(
    f"""
    WITH batch AS MATERIALIZED (
        SELECT m.merchant_id, c.day, m.timezone AS tz, m.currency,
               (c.day::timestamp AT TIME ZONE m.timezone) - interval '3 hours' AS scan_from,
               ((c.day + 1)::timestamp AT TIME ZONE m.timezone) + interval '3 hours' AS scan_to
        FROM {_BATCH}
        JOIN merchants m ON m.merchant_id = c.merchant_id
    ),
    tx AS MATERIALIZED (
        SELECT b.merchant_id, b.day, b.currency,
               CAST(date_part('hour', t.occurred_at AT TIME ZONE b.tz) AS smallint) AS hour,
               t.transaction_id,
               t.type = 'PAYMENT' AND t.status = 'SUCCESSFUL' AS sale,
               t.type IN ('REFUND', 'CHARGEBACK') AND t.status = 'SUCCESSFUL' AS refund,
               t.type = 'PAYMENT' AND t.status IN ('FAILED', 'CANCELLED') AS failed,
               t.amount_minor, t.tip_minor, t.payment_method,
               NULLIF(t.customer_id, '') AS customer_id
        FROM batch b
        JOIN transactions t
          ON t.merchant_id = b.merchant_id
         AND t.occurred_at >= b.scan_from
         AND t.occurred_at < b.scan_to
        WHERE CAST(t.occurred_at AT TIME ZONE b.tz AS date) = b.day
    ),
    -- one row per product of a successful payment (a product on several
    -- lines of one payment is still one transaction of that product)
    items AS MATERIALIZED (
        SELECT any_value(tx.merchant_id) AS merchant_id, any_value(tx.day) AS day, any_value(tx.hour) AS hour,
               any_value(tx.currency) AS currency, i.product_id, sum(i.quantity) AS units,
               sum(CAST(i.quantity AS bigint) * i.unit_price_minor) AS gross
        FROM tx
        JOIN transaction_items i ON i.transaction_id = tx.transaction_id
        WHERE tx.sale
        GROUP BY i.transaction_id, i.product_id
    ),
    sale_customers AS MATERIALIZED (
        SELECT DISTINCT merchant_id, day, hour, customer_id
        FROM tx WHERE sale AND customer_id IS NOT NULL
    ),
    hourly AS MATERIALIZED (
        SELECT h.merchant_id, h.day, h.hour, h.currency,
               h.gross AS gross_sales_minor,
               h.refunds AS refunds_minor,
               h.gross - h.refunds AS net_sales_minor,
               CAST(h.sales AS integer) AS transactions,
               h.tips AS tips_minor,
               CAST(coalesce(u.units, 0) AS integer) AS units_sold,
               CAST(coalesce(c.customers, 0) AS integer) AS unique_customers,
               CAST(h.refund_count AS integer) AS refund_count,
               CAST(h.failed_count AS integer) AS failed_count
        FROM (
            SELECT merchant_id, day, hour, any_value(currency) AS currency,
                   CAST(coalesce(sum(amount_minor) FILTER (WHERE sale), 0) AS bigint) AS gross,
                   CAST(coalesce(sum(amount_minor) FILTER (WHERE refund), 0) AS bigint) AS refunds,
                   count(*) FILTER (WHERE sale) AS sales,
                   CAST(coalesce(sum(tip_minor) FILTER (WHERE sale), 0) AS bigint) AS tips,
                   count(*) FILTER (WHERE refund) AS refund_count,
                   count(*) FILTER (WHERE failed) AS failed_count
            FROM tx GROUP BY merchant_id, day, hour
        ) h
        LEFT JOIN (
            SELECT merchant_id, day, hour, sum(units) AS units FROM items GROUP BY merchant_id, day, hour
        ) u ON u.merchant_id = h.merchant_id AND u.day = h.day AND u.hour = h.hour
        LEFT JOIN (
            SELECT merchant_id, day, hour, count(*) AS customers FROM sale_customers GROUP BY merchant_id, day, hour
        ) c ON c.merchant_id = h.merchant_id AND c.day = h.day AND c.hour = h.hour
    ),
    daily AS MATERIALIZED (
        SELECT d.merchant_id, d.day, d.currency, d.gross_sales_minor, d.refunds_minor, d.net_sales_minor,
               d.transactions, d.tips_minor, d.units_sold,
               CAST(coalesce(c.customers, 0) AS integer) AS unique_customers,
               d.refund_count, d.failed_count,
               coalesce(pm.mix, CAST('{{}}' AS jsonb)) AS payment_methods
        FROM (
            SELECT merchant_id, day, currency,
                   CAST(sum(gross_sales_minor) AS bigint) AS gross_sales_minor,
                   CAST(sum(refunds_minor) AS bigint) AS refunds_minor,
                   CAST(sum(net_sales_minor) AS bigint) AS net_sales_minor,
                   CAST(sum(transactions) AS integer) AS transactions,
                   CAST(sum(tips_minor) AS bigint) AS tips_minor,
                   CAST(sum(units_sold) AS integer) AS units_sold,
                   CAST(sum(refund_count) AS integer) AS refund_count,
                   CAST(sum(failed_count) AS integer) AS failed_count
            FROM hourly GROUP BY merchant_id, day, currency
        ) d
        LEFT JOIN (
            SELECT merchant_id, day, count(*) AS customers
            FROM (SELECT DISTINCT merchant_id, day, customer_id FROM sale_customers) per_day
            GROUP BY merchant_id, day
        ) c ON c.merchant_id = d.merchant_id AND c.day = d.day
        LEFT JOIN (
            SELECT merchant_id, day,
                   jsonb_object_agg(payment_method,
                                    jsonb_build_object('transactions', n, 'gross_sales_minor', gross)) AS mix
            FROM (
                SELECT merchant_id, day, payment_method, count(*) AS n, sum(amount_minor) AS gross
                FROM tx WHERE sale GROUP BY merchant_id, day, payment_method
            ) per_method
            GROUP BY merchant_id, day
        ) pm ON pm.merchant_id = d.merchant_id AND pm.day = d.day
    ),
    product AS MATERIALIZED (
        SELECT p.merchant_id, p.day, p.product_id, p.currency,
               CAST(p.units AS integer) AS units_sold,
               CAST(p.gross AS bigint) AS gross_sales_minor,
               CAST(p.sales AS integer) AS transactions
        FROM (
            SELECT merchant_id, day, product_id, any_value(currency) AS currency,
                   sum(units) AS units, sum(gross) AS gross, count(*) AS sales
            FROM items GROUP BY merchant_id, day, product_id
        ) p
    ),
    staged_daily AS (
        INSERT INTO stage_daily ({_cols(_DAILY)}) SELECT {_cols(_DAILY)} FROM daily RETURNING 1
    ),
    staged_product AS (
        INSERT INTO stage_product ({_cols(_PRODUCT)}) SELECT {_cols(_PRODUCT)} FROM product RETURNING 1
    )
    INSERT INTO stage_hourly ({_cols(_HOURLY)}) SELECT {_cols(_HOURLY)} FROM hourly
    """
)

# (metric table, staging table, (key columns, value columns))
_TABLES = (
    ("daily_metrics", "stage_daily", _DAILY),
    ("hourly_metrics", "stage_hourly", _HOURLY),
    ("daily_product_metrics", "stage_product", _PRODUCT),
)

# Temporary tables holding one batch's recomputed rows, dropped at commit.
CREATE_STAGES = tuple(
    text(f"CREATE TEMPORARY TABLE {stage} (LIKE {table} INCLUDING DEFAULTS) ON COMMIT DROP")
    for table, stage, _ in _TABLES
)


def _delete_stale(table: str, stage: str, spec: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    keys, values = spec
    same_key = " AND ".join(f"s.{k} = t.{k}" for k in keys)
    staged = ", ".join(f"s.{v}" for v in values)
    stored = ", ".join(f"t.{v}" for v in values)
    return f"""
        DELETE FROM {table} t
        USING {_BATCH}
        WHERE t.merchant_id = c.merchant_id AND t.day = c.day
          AND NOT EXISTS (
              SELECT 1 FROM {stage} s WHERE {same_key} AND ({staged}) IS NOT DISTINCT FROM ({stored})
          )
        RETURNING 1"""


def _insert_missing(table: str, stage: str, spec: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    return f"""
        INSERT INTO {table} ({_cols(spec)})
        SELECT {_cols(spec)} FROM {stage}
        ON CONFLICT ({", ".join(spec[0])}) DO NOTHING
        RETURNING 1"""


def _per_table(build: str) -> str:
    """One data-modifying CTE per metric table; selects each one's row count."""
    make = _delete_stale if build == "delete" else _insert_missing
    ctes = ",".join(f"\n    {table}_rows AS ({make(table, stage, spec)}\n    )" for table, stage, spec in _TABLES)
    counts = ", ".join(f"(SELECT count(*) FROM {table}_rows) AS {table}" for table, _, _ in _TABLES)
    return f"WITH{ctes}\nSELECT {counts}"


# Deletes the stored rows of the batch's days that differ from their staged
# row or have none (that day or hour no longer has data).
DELETE_STALE = text(_per_table("delete"))

# Inserts the staged rows that are not stored. After DELETE_STALE a stored
# row with the same key is identical to the staged one, so it is skipped.
INSERT_MISSING = text(_per_table("insert"))

# Repair/backfill: queue every day of a range for the given merchants (all
# when :all_merchants). Re-queueing a day that a worker holds waits for that
# worker and then queues it again, so the repair always sees committed data.
ENQUEUE_RANGE = text(
    """
    INSERT INTO metric_refresh_queue (merchant_id, day)
    SELECT m.merchant_id, CAST(:start AS date) + n
    FROM merchants m
    CROSS JOIN generate_series(0, CAST(:end AS date) - CAST(:start AS date)) AS n
    WHERE CAST(:all_merchants AS boolean) OR m.merchant_id = ANY(CAST(:merchant_ids AS text[]))
    ON CONFLICT (merchant_id, day) DO UPDATE SET queued_at = excluded.queued_at
    """
)

# With FORCE'd row-level security a non-privileged batch role would see no
# transactions and silently "refresh" every day to nothing.
RLS_ACTIVE = text("SELECT row_security_active('transactions') OR row_security_active('daily_metrics')")
