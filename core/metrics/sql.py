"""Parameterised SQL for a metric query, built from enums only (never from text).

Every statement has the same shape: a ``periods`` list (index 1 is the asked
period, 2.. its comparison periods), a ``src`` CTE with one row per input
row tagged with its period ``idx`` and ``bucket``, and a final aggregate
``GROUP BY GROUPING SETS ((idx, bucket), (idx))`` so each period's total
(``is_total = 1``) comes from the same scan as its buckets; distinct counts
therefore never get summed across buckets. Columns returned: ``idx``,
``bucket`` (text key), ``bucket_label`` (a product name, else NULL),
``is_total``, ``num``, ``den`` (ratios), ``extra`` (a second amount: gross
sales for the payment-method mix).

Sources, fastest first:

- ``daily_metrics``: additive metrics by day/week/month/weekday; gross sales
  and transactions by payment method (its ``payment_methods`` JSON); unique
  customers when every period is one day.
- ``hourly_metrics``: additive metrics by hour of day.
- ``daily_product_metrics``: units and sales per product or category.
- ``transactions`` (facts): distinct and returning customers over several
  days, other metrics by payment method, product metrics by hour of day.

Facts are read through the ``(merchant_id, occurred_at)`` index over each
period's UTC window widened by three hours on each side, and kept when their
local date (``occurred_at AT TIME ZONE tz``) is in the period: the same rule
as the aggregate step (pipelines/aggregates/_sql.py), so both agree on every
DST day.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.metrics.definitions import Metric
from core.metrics.errors import UnsupportedQueryError


class GroupBy(StrEnum):
    """One dimension to break a metric down by."""

    NONE = "none"
    DAY = "day"
    WEEK = "week"  # ISO week, Monday first
    MONTH = "month"
    HOUR_OF_DAY = "hour_of_day"
    WEEKDAY = "weekday"  # ISO 1 = Monday .. 7 = Sunday
    PRODUCT = "product"
    CATEGORY = "category"
    PAYMENT_METHOD = "payment_method"


TIME_GROUPS = (GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH, GroupBy.HOUR_OF_DAY, GroupBy.WEEKDAY)
PRODUCT_GROUPS = (GroupBy.PRODUCT, GroupBy.CATEGORY)


class Source(StrEnum):
    """Where a query's rows come from."""

    DAILY = "daily_metrics"
    DAILY_METHODS = "daily_metrics.payment_methods"
    HOURLY = "hourly_metrics"
    PRODUCTS = "daily_product_metrics"
    FACTS = "transactions"
    ITEMS = "transaction_items"
    RETURNING = "transactions (returning customers)"


@dataclass(frozen=True)
class Statement:
    """SQL text and the source it reads."""

    sql: str
    source: Source


_PERIODS = """periods AS (
        SELECT p.idx, p.start_day, p.end_day
        FROM unnest(CAST(:starts AS date[]), CAST(:ends AS date[])) WITH ORDINALITY AS p(start_day, end_day, idx)
    )"""

_LOCAL = "(t.occurred_at AT TIME ZONE :tz)"
_FACT_JOIN = """periods p
        JOIN transactions t
          ON t.merchant_id = :merchant_id
         AND t.occurred_at >= (CAST(p.start_day AS timestamp) AT TIME ZONE :tz) - interval '3 hours'
         AND t.occurred_at < (CAST(p.end_day AS timestamp) AT TIME ZONE :tz) + interval '3 hours'"""
_FACT_IN_PERIOD = f"CAST({_LOCAL} AS date) >= p.start_day AND CAST({_LOCAL} AS date) < p.end_day"
_SALE = "t.type = 'PAYMENT' AND t.status = 'SUCCESSFUL'"
_REFUND = "t.type IN ('REFUND', 'CHARGEBACK') AND t.status = 'SUCCESSFUL'"


def _date_bucket(group: GroupBy, day: str) -> str:
    """Bucket key of a local date expression."""
    return {
        GroupBy.NONE: "''",
        GroupBy.DAY: f"to_char({day}, 'YYYY-MM-DD')",
        GroupBy.WEEK: f"to_char({day}, 'IYYY-\"W\"IW')",
        GroupBy.MONTH: f"to_char({day}, 'YYYY-MM')",
        GroupBy.WEEKDAY: f"CAST(extract(isodow FROM {day}) AS int)::text",
    }[group]


def _hour_bucket(hour: str) -> str:
    return f"lpad(CAST({hour} AS int)::text, 2, '0')"


def _bucket_ref(group: GroupBy, day: str) -> str:
    """First day a returning customer must have paid before (bucket start, not before the period)."""
    if group is GroupBy.DAY:
        return day
    if group is GroupBy.WEEK:
        return f"greatest(CAST(date_trunc('week', {day}) AS date), p.start_day)"
    if group is GroupBy.MONTH:
        return f"greatest(CAST(date_trunc('month', {day}) AS date), p.start_day)"
    return "p.start_day"


def _final(values: str, grouped: bool, label: str = "CAST(NULL AS text)") -> str:
    if grouped:
        return f"""
    SELECT idx, bucket, {label} AS bucket_label, GROUPING(bucket) AS is_total, {values}
    FROM src
    GROUP BY GROUPING SETS ((idx, bucket), (idx))"""
    return f"""
    SELECT idx, '' AS bucket, CAST(NULL AS text) AS bucket_label, 1 AS is_total, {values}
    FROM src
    GROUP BY idx"""


# Metric -> (num, den, extra) over the aggregate tables' columns.
_AGG_VALUES: dict[Metric, tuple[str, str, str]] = {
    Metric.NET_SALES: ("sum(net_sales_minor)", "NULL", "NULL"),
    Metric.GROSS_SALES: ("sum(gross_sales_minor)", "NULL", "NULL"),
    Metric.REFUNDS: ("sum(refunds_minor)", "NULL", "NULL"),
    Metric.TRANSACTIONS: ("sum(transactions)", "NULL", "NULL"),
    Metric.AVERAGE_TICKET: ("sum(gross_sales_minor)", "sum(transactions)", "NULL"),
    Metric.TIPS: ("sum(tips_minor)", "NULL", "NULL"),
    Metric.UNITS_SOLD: ("sum(units_sold)", "NULL", "NULL"),
    Metric.UNIQUE_CUSTOMERS: ("sum(unique_customers)", "NULL", "NULL"),
}

# Over the facts (``src`` rows of transactions, flags precomputed).
_FACT_VALUES: dict[Metric, tuple[str, str, str]] = {
    Metric.NET_SALES: (
        "coalesce(sum(amount_minor) FILTER (WHERE sale), 0) - coalesce(sum(amount_minor) FILTER (WHERE refund), 0)",
        "NULL",
        "NULL",
    ),
    Metric.GROSS_SALES: ("coalesce(sum(amount_minor) FILTER (WHERE sale), 0)", "NULL", "NULL"),
    Metric.REFUNDS: ("coalesce(sum(amount_minor) FILTER (WHERE refund), 0)", "NULL", "NULL"),
    Metric.TRANSACTIONS: ("count(*) FILTER (WHERE sale)", "NULL", "NULL"),
    Metric.AVERAGE_TICKET: (
        "coalesce(sum(amount_minor) FILTER (WHERE sale), 0)",
        "count(*) FILTER (WHERE sale)",
        "NULL",
    ),
    Metric.TIPS: ("coalesce(sum(tip_minor) FILTER (WHERE sale), 0)", "NULL", "NULL"),
    Metric.UNITS_SOLD: ("coalesce(sum(units) FILTER (WHERE sale), 0)", "NULL", "NULL"),
    Metric.UNIQUE_CUSTOMERS: ("count(DISTINCT customer_id) FILTER (WHERE sale)", "NULL", "NULL"),
    Metric.PAYMENT_METHOD_MIX: (
        "count(*) FILTER (WHERE sale)",
        "NULL",
        "coalesce(sum(amount_minor) FILTER (WHERE sale), 0)",
    ),
}

_METHOD_VALUES: dict[Metric, tuple[str, str, str]] = {
    Metric.GROSS_SALES: ("sum(method_gross)", "NULL", "NULL"),
    Metric.TRANSACTIONS: ("sum(method_tx)", "NULL", "NULL"),
    Metric.AVERAGE_TICKET: ("sum(method_gross)", "sum(method_tx)", "NULL"),
    Metric.PAYMENT_METHOD_MIX: ("sum(method_tx)", "NULL", "sum(method_gross)"),
}

_PRODUCT_VALUES: dict[Metric, tuple[str, str, str]] = {
    Metric.UNITS_SOLD: ("sum(units_sold)", "NULL", "NULL"),
    Metric.GROSS_SALES: ("sum(gross_sales_minor)", "NULL", "NULL"),
    Metric.TRANSACTIONS: ("sum(transactions)", "NULL", "NULL"),
}

_ITEM_VALUES: dict[Metric, tuple[str, str, str]] = {
    Metric.UNITS_SOLD: ("coalesce(sum(quantity), 0)", "NULL", "NULL"),
    Metric.GROSS_SALES: ("coalesce(sum(CAST(quantity AS bigint) * unit_price_minor), 0)", "NULL", "NULL"),
    Metric.TRANSACTIONS: ("count(DISTINCT transaction_id)", "NULL", "NULL"),
}

PRODUCT_METRICS = frozenset(_PRODUCT_VALUES)


def _values(table: dict[Metric, tuple[str, str, str]], metric: Metric) -> str:
    num, den, extra = table[metric]
    return f"{num} AS num, {den} AS den, {extra} AS extra"


def _product_filter(products: bool, categories: bool, alias: str, pr: str = "pr") -> str:
    out = ""
    if products:
        out += f" AND ({alias}.product_id = ANY(:products) OR lower({pr}.name) = ANY(:product_names))"
    if categories:
        out += f" AND lower({pr}.category) = ANY(:categories)"
    return out


def choose_source(metric: Metric, group: GroupBy, product_filter: bool, single_days: bool) -> Source:
    """The cheapest source that answers the query exactly.

    Raises:
        UnsupportedQueryError: The combination has no definition (e.g. refunds per product).
    """
    product_dims = group in PRODUCT_GROUPS or product_filter
    if product_dims:
        if metric not in PRODUCT_METRICS:
            raise UnsupportedQueryError(
                f"{metric.value} is not defined per product or category; "
                f"per product: {', '.join(sorted(m.value for m in PRODUCT_METRICS))}"
            )
        if group is GroupBy.HOUR_OF_DAY or group is GroupBy.PAYMENT_METHOD:
            return Source.ITEMS
        # A payment with two products counts once per product: summing products' counts overstates a category.
        if metric is Metric.TRANSACTIONS and group is not GroupBy.PRODUCT:
            return Source.ITEMS
        return Source.PRODUCTS
    if metric is Metric.RETURNING_CUSTOMERS:
        if group not in (GroupBy.NONE, GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH):
            raise UnsupportedQueryError("returning customers are available in total or by day, week or month")
        return Source.RETURNING
    if metric is Metric.PAYMENT_METHOD_MIX:
        if group not in (GroupBy.NONE, GroupBy.PAYMENT_METHOD):
            raise UnsupportedQueryError("the payment-method mix is broken down by payment method only")
        return Source.DAILY_METHODS
    if group is GroupBy.PAYMENT_METHOD:
        return Source.DAILY_METHODS if metric in _METHOD_VALUES else Source.FACTS
    if metric is Metric.UNIQUE_CUSTOMERS:
        return Source.DAILY if single_days and group in (GroupBy.NONE, GroupBy.DAY) else Source.FACTS
    if group is GroupBy.HOUR_OF_DAY:
        return Source.HOURLY
    return Source.DAILY


def build_statement(
    metric: Metric, group: GroupBy, source: Source, *, products: bool = False, categories: bool = False
) -> Statement:
    """The SQL for a metric, grouping and source (from :func:`choose_source`).

    Parameters it binds: ``merchant_id``, ``starts``/``ends`` (date arrays),
    ``tz`` (facts only), ``products``/``product_names``/``categories``
    (lower-cased) when filtering.
    """
    grouped = group is not GroupBy.NONE or metric is Metric.PAYMENT_METHOD_MIX
    if metric is Metric.PAYMENT_METHOD_MIX:
        group = GroupBy.PAYMENT_METHOD

    if source in (Source.DAILY, Source.HOURLY):
        table, alias = ("daily_metrics", "d") if source is Source.DAILY else ("hourly_metrics", "h")
        bucket = _hour_bucket(f"{alias}.hour") if group is GroupBy.HOUR_OF_DAY else _date_bucket(group, f"{alias}.day")
        sql = f"""
    WITH {_PERIODS},
    src AS (
        SELECT p.idx, {bucket} AS bucket, {alias}.*
        FROM periods p
        JOIN {table} {alias}
          ON {alias}.merchant_id = :merchant_id AND {alias}.day >= p.start_day AND {alias}.day < p.end_day
    ){_final(_values(_AGG_VALUES, metric), grouped)}"""
        return Statement(sql, source)

    if source is Source.DAILY_METHODS:
        bucket = "pm.method" if group is GroupBy.PAYMENT_METHOD else _date_bucket(group, "d.day")
        sql = f"""
    WITH {_PERIODS},
    src AS (
        SELECT p.idx, {bucket} AS bucket,
               CAST(pm.v ->> 'transactions' AS bigint) AS method_tx,
               CAST(pm.v ->> 'gross_sales_minor' AS bigint) AS method_gross
        FROM periods p
        JOIN daily_metrics d
          ON d.merchant_id = :merchant_id AND d.day >= p.start_day AND d.day < p.end_day
        CROSS JOIN LATERAL jsonb_each(d.payment_methods) AS pm(method, v)
    ){_final(_values(_METHOD_VALUES, metric), grouped)}"""
        return Statement(sql, source)

    if source is Source.PRODUCTS:
        if group is GroupBy.PRODUCT:
            bucket, label = "dp.product_id", "max(bucket_name)"
        elif group is GroupBy.CATEGORY:
            bucket, label = "coalesce(pr.category, '')", "CAST(NULL AS text)"
        else:
            bucket, label = _date_bucket(group, "dp.day"), "CAST(NULL AS text)"
        sql = f"""
    WITH {_PERIODS},
    src AS (
        SELECT p.idx, {bucket} AS bucket, coalesce(pr.name, dp.product_id) AS bucket_name,
               dp.units_sold, dp.gross_sales_minor, dp.transactions
        FROM periods p
        JOIN daily_product_metrics dp
          ON dp.merchant_id = :merchant_id AND dp.day >= p.start_day AND dp.day < p.end_day
        LEFT JOIN products pr ON pr.merchant_id = dp.merchant_id AND pr.product_id = dp.product_id
        WHERE true{_product_filter(products, categories, "dp")}
    ){_final(_values(_PRODUCT_VALUES, metric), grouped, label)}"""
        return Statement(sql, source)

    local_day = f"CAST({_LOCAL} AS date)"
    if group is GroupBy.HOUR_OF_DAY:
        bucket = _hour_bucket(f"date_part('hour', {_LOCAL})")
    elif group is GroupBy.PAYMENT_METHOD:
        bucket = "t.payment_method"
    elif group is GroupBy.PRODUCT:
        bucket = "i.product_id"
    elif group is GroupBy.CATEGORY:
        bucket = "coalesce(pr.category, '')"
    else:
        bucket = _date_bucket(group, local_day)

    if source is Source.ITEMS:
        label = "max(bucket_name)" if group is GroupBy.PRODUCT else "CAST(NULL AS text)"
        sql = f"""
    WITH {_PERIODS},
    src AS (
        SELECT p.idx, {bucket} AS bucket, coalesce(pr.name, i.product_id) AS bucket_name,
               i.transaction_id, i.quantity, i.unit_price_minor
        FROM {_FACT_JOIN}
        JOIN transaction_items i ON i.transaction_id = t.transaction_id
        LEFT JOIN products pr ON pr.merchant_id = i.merchant_id AND pr.product_id = i.product_id
        WHERE {_FACT_IN_PERIOD} AND {_SALE}{_product_filter(products, categories, "i")}
    ){_final(_values(_ITEM_VALUES, metric), grouped, label)}"""
        return Statement(sql, source)

    if source is Source.RETURNING:
        sql = f"""
    WITH {_PERIODS},
    visits AS (
        SELECT p.idx, {bucket} AS bucket, t.customer_id,
               min({_bucket_ref(group, local_day)}) AS bucket_ref, min(p.start_day) AS period_start
        FROM {_FACT_JOIN}
        WHERE {_FACT_IN_PERIOD} AND {_SALE} AND t.customer_id IS NOT NULL AND t.customer_id <> ''
        GROUP BY p.idx, bucket, t.customer_id
    ),
    firsts AS (
        SELECT c.customer_id,
               CAST((SELECT min(e.occurred_at) FROM transactions e
                     WHERE e.merchant_id = :merchant_id AND e.customer_id = c.customer_id
                       AND e.type = 'PAYMENT' AND e.status = 'SUCCESSFUL') AT TIME ZONE :tz AS date) AS first_day
        FROM (SELECT DISTINCT customer_id FROM visits) c
    ),
    src AS (
        SELECT v.*, f.first_day FROM visits v JOIN firsts f ON f.customer_id = v.customer_id
    )"""
        if grouped:
            sql += """
    SELECT idx, bucket, CAST(NULL AS text) AS bucket_label, GROUPING(bucket) AS is_total,
           CASE WHEN GROUPING(bucket) = 1
                THEN count(DISTINCT customer_id) FILTER (WHERE first_day < period_start)
                ELSE count(DISTINCT customer_id) FILTER (WHERE first_day < bucket_ref) END AS num,
           NULL AS den, NULL AS extra
    FROM src
    GROUP BY GROUPING SETS ((idx, bucket), (idx))"""
        else:
            sql += """
    SELECT idx, '' AS bucket, CAST(NULL AS text) AS bucket_label, 1 AS is_total,
           count(DISTINCT customer_id) FILTER (WHERE first_day < period_start) AS num, NULL AS den, NULL AS extra
    FROM src
    GROUP BY idx"""
        return Statement(sql, source)

    units = (
        ", (SELECT coalesce(sum(i.quantity), 0) FROM transaction_items i WHERE i.transaction_id = t.transaction_id)"
        " AS units"
        if metric is Metric.UNITS_SOLD
        else ""
    )
    sql = f"""
    WITH {_PERIODS},
    src AS (
        SELECT p.idx, {bucket} AS bucket,
               ({_SALE}) AS sale, ({_REFUND}) AS refund,
               t.amount_minor, t.tip_minor, NULLIF(t.customer_id, '') AS customer_id{units}
        FROM {_FACT_JOIN}
        WHERE {_FACT_IN_PERIOD}
    ){_final(_values(_FACT_VALUES, metric), grouped)}"""
    return Statement(sql, source)


__all__ = [
    "PRODUCT_GROUPS",
    "PRODUCT_METRICS",
    "TIME_GROUPS",
    "GroupBy",
    "Source",
    "Statement",
    "build_statement",
    "choose_source",
]
