"""Load the aggregates the detectors read, for many merchants at once.

Five set-based queries per batch of merchants (merchants, daily, hourly on
the same weekdays only, per-product series as arrays, reviews per local day),
each filtered by ``merchant_id = ANY(:ids)`` so a merchant's data is read only
when it is asked for (and, on a tenant session, row-level security applies on
top). Money is in minor units of the merchant's currency; days are
merchant-local, as stored by the aggregate step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any, NamedTuple

from sqlalchemy import Connection, text
from sqlalchemy.orm import Session

# Same weekdays looked back at for a baseline (plus the day itself).
BASELINE_WEEKS = 8
DAILY_LOOKBACK_DAYS = 7 * BASELINE_WEEKS + 6
PRODUCT_BASELINE_DAYS = 28
# Longest run of zero days a stock-out may have (beyond it the product is gone, not out).
MAX_STOCKOUT_RUN = 14
PRODUCT_LOOKBACK_DAYS = PRODUCT_BASELINE_DAYS + MAX_STOCKOUT_RUN
REVIEW_LOOKBACK_DAYS = DAILY_LOOKBACK_DAYS

Executor = Connection | Session


class DailyRow(NamedTuple):
    """One ``daily_metrics`` row (the fields the detectors use)."""

    net_sales: int
    gross_sales: int
    refunds: int
    transactions: int
    refund_count: int
    failed_count: int
    units_sold: int


EMPTY_DAY = DailyRow(0, 0, 0, 0, 0, 0, 0)


class HourRow(NamedTuple):
    """One ``hourly_metrics`` row."""

    transactions: int
    net_sales: int


class ReviewDay(NamedTuple):
    """Reviews of one merchant-local day."""

    n: int
    rating_sum: int
    rating_sq_sum: int
    low: int  # 1-2 stars
    high: int  # 4-5 stars


@dataclass
class ProductSeries:
    """Units and gross sales of one product per local day (days without sales absent)."""

    product_id: str
    name: str
    active: bool
    units: dict[date, int] = field(default_factory=dict)
    gross: dict[date, int] = field(default_factory=dict)


@dataclass
class MerchantData:
    """Everything the detectors read for one merchant and one ``as_of`` day."""

    merchant_id: str
    currency: str
    timezone: str
    as_of: date
    daily: dict[date, DailyRow] = field(default_factory=dict)
    hourly: dict[date, dict[int, HourRow]] = field(default_factory=dict)
    products: dict[str, ProductSeries] = field(default_factory=dict)
    reviews: dict[date, ReviewDay] = field(default_factory=dict)

    @property
    def history_start(self) -> date | None:
        """First day with any metrics in the loaded window (days before it are unknown, not zero)."""
        return min(self.daily) if self.daily else None

    def day(self, d: date) -> DailyRow:
        """The day's metrics; a day without rows had no transactions (zeros)."""
        return self.daily.get(d, EMPTY_DAY)


def same_weekdays(as_of: date, weeks: int = BASELINE_WEEKS) -> list[date]:
    """``as_of`` and the same weekday in each of the previous ``weeks`` weeks."""
    return [as_of - timedelta(days=7 * k) for k in range(weeks + 1)]


_MERCHANTS = text("SELECT merchant_id, currency, timezone FROM merchants WHERE merchant_id = ANY(CAST(:ids AS text[]))")
_DAILY = text(
    """
    SELECT merchant_id, day, net_sales_minor, gross_sales_minor, refunds_minor, transactions,
           refund_count, failed_count, units_sold
    FROM daily_metrics
    WHERE merchant_id = ANY(CAST(:ids AS text[])) AND day BETWEEN :start AND :end
    """
)
_HOURLY = text(
    """
    SELECT merchant_id, day, hour, transactions, net_sales_minor
    FROM hourly_metrics
    WHERE merchant_id = ANY(CAST(:ids AS text[])) AND day = ANY(CAST(:days AS date[]))
    """
)
# One row per product with its days as offsets from :start, so a few thousand
# rows carry a batch's whole product history.
_PRODUCTS = text(
    """
    SELECT s.merchant_id, s.product_id, coalesce(p.name, s.product_id), coalesce(p.active, true),
           s.offsets, s.units, s.gross
    FROM (
        SELECT merchant_id, product_id,
               array_agg(day - CAST(:start AS date) ORDER BY day) AS offsets,
               array_agg(units_sold ORDER BY day) AS units,
               array_agg(gross_sales_minor ORDER BY day) AS gross
        FROM daily_product_metrics
        WHERE merchant_id = ANY(CAST(:ids AS text[])) AND day BETWEEN :start AND :end
        GROUP BY merchant_id, product_id
    ) s
    LEFT JOIN products p ON p.merchant_id = s.merchant_id AND p.product_id = s.product_id
    """
)
# The created_at bounds are a superset (any zone is within a day of UTC) for
# the index; the local date decides.
_REVIEWS = text(
    """
    SELECT r.merchant_id, CAST(r.created_at AT TIME ZONE m.timezone AS date) AS day,
           count(*), sum(r.rating), sum(r.rating * r.rating),
           count(*) FILTER (WHERE r.rating <= 2), count(*) FILTER (WHERE r.rating >= 4)
    FROM reviews r
    JOIN merchants m ON m.merchant_id = r.merchant_id
    WHERE r.merchant_id = ANY(CAST(:ids AS text[]))
      AND r.created_at >= CAST(:start AS timestamptz) - interval '1 day'
      AND r.created_at < CAST(:end AS timestamptz) + interval '2 days'
      AND CAST(r.created_at AT TIME ZONE m.timezone AS date) BETWEEN :start AND :end
    GROUP BY 1, 2
    """
)


def load_merchant_data(executor: Executor, merchant_ids: Sequence[str], as_of: date) -> dict[str, MerchantData]:
    """Load what the detectors need for ``merchant_ids`` on ``as_of``.

    Args:
        executor: A connection or session (owner, or a tenant session scoped to the merchant).
        merchant_ids: Merchants to load; unknown ids are skipped.
        as_of: The merchant-local day being analysed (the last day loaded).

    Returns:
        Data per known merchant id.
    """
    ids = list(merchant_ids)
    out: dict[str, MerchantData] = {}
    for mid, currency, tz in executor.execute(_MERCHANTS, {"ids": ids}):
        out[mid] = MerchantData(mid, currency, tz, as_of)
    if not out:
        return out
    ids = list(out)
    start = as_of - timedelta(days=DAILY_LOOKBACK_DAYS)
    params: dict[str, Any] = {"ids": ids, "start": start, "end": as_of}
    for mid, d, *values in executor.execute(_DAILY, params):
        out[mid].daily[d] = DailyRow(*values)
    for mid, d, hour, tx, net in executor.execute(_HOURLY, {"ids": ids, "days": same_weekdays(as_of)}):
        out[mid].hourly.setdefault(d, {})[hour] = HourRow(tx, net)
    p_start = as_of - timedelta(days=PRODUCT_LOOKBACK_DAYS)
    for mid, pid, name, active, offsets, units, gross in executor.execute(
        _PRODUCTS, {"ids": ids, "start": p_start, "end": as_of}
    ):
        days = [p_start + timedelta(days=o) for o in offsets]
        out[mid].products[pid] = ProductSeries(pid, name, bool(active), dict(zip(days, units, strict=True)),
                                               dict(zip(days, gross, strict=True)))  # fmt: skip
    for mid, d, n, s, sq, low, high in executor.execute(_REVIEWS, params):
        out[mid].reviews[d] = ReviewDay(int(n), int(s), int(sq), int(low), int(high))
    return out


_REVIEW_SNIPPETS = text(
    """
    SELECT r.text
    FROM reviews r
    JOIN merchants m ON m.merchant_id = r.merchant_id
    WHERE r.merchant_id = :mid AND coalesce(r.text, '') <> ''
      AND r.created_at >= CAST(:start AS timestamptz) - interval '1 day'
      AND r.created_at < CAST(:end AS timestamptz) + interval '2 days'
      AND CAST(r.created_at AT TIME ZONE m.timezone AS date) BETWEEN :start AND :end
      AND (CASE WHEN :low THEN r.rating <= 2 ELSE r.rating >= 4 END)
    ORDER BY r.created_at DESC, r.review_id
    LIMIT :limit
    """
)


def load_review_snippets(
    executor: Executor, merchant_id: str, start: date, end: date, *, low: bool, limit: int = 3
) -> list[str]:
    """Texts of the merchant's newest low (1-2 star) or high (4-5 star) reviews of local days ``start..end``.

    They are untrusted merchant-supplied content: the narrator shows them to
    the model only inside a fenced data block.
    """
    params = {"mid": merchant_id, "start": start, "end": end, "low": low, "limit": limit}
    return [str(t) for t in executor.execute(_REVIEW_SNIPPETS, params).scalars()]
