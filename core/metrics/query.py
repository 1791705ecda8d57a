"""Validated metric queries in, computed and traceable results out.

A model (or the offline planner) never writes SQL: it fills a
:class:`MetricQuery` from enums and small values; :func:`run_metric_query`
resolves the period in the merchant's zone, picks the cheapest exact source
(see :mod:`core.metrics.sql`), runs one parameterised statement in the
caller's (tenant) session and returns a :class:`MetricResult` carrying the
values, the resolved periods, the unit and the SQL with its parameters.

    with database.merchant_session(merchant_id) as session:
        result = run_metric_query(session, merchant_id, MetricQuery(metric="net_sales", period="last week"))
    result.total            # Decimal("1234.50")
    result.facts()          # [Fact(name="net_sales", value=..., unit="EUR", period=..., query=...)]

The merchant id comes from the authenticated context; row-level security of
the session applies on top of the explicit filter.
"""

from __future__ import annotations

import textwrap
import time
from collections.abc import Sequence
from datetime import date, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import Connection, Row, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession
from sqlalchemy.orm import Session

from core.metrics.definitions import Aggregation, Metric, Unit, definition
from core.metrics.errors import MerchantNotVisibleError
from core.metrics.money import ratio, rounded, to_major
from core.metrics.periods import Period, PeriodSpec, describe, resolve_period, today_in
from core.metrics.sql import TIME_GROUPS, GroupBy, Source, build_statement, choose_source

Value = Decimal | int


class Comparison(StrEnum):
    """What a value is compared with."""

    NONE = "none"
    PREVIOUS_PERIOD = "previous_period"  # Period.previous(): last month for a month, ...
    SAME_WEEKDAY = "same_weekday"  # the period moved back 1..N weeks, averaged


class Order(StrEnum):
    """Which end of a ranking ``top_n`` keeps."""

    TOP = "top"
    BOTTOM = "bottom"


class MetricQuery(BaseModel):
    """One metric question in structured form (what a tool call carries).

    Attributes:
        metric: Which metric.
        period: A :class:`PeriodSpec`, a resolved :class:`Period`, or a short
            English expression ("last week") parsed deterministically.
        group_by: One breakdown (time bucket, product, category or payment method).
        compare: Add a comparison with the previous period or the same weekday(s).
        weeks: Weeks of history for ``same_weekday``.
        top_n: Keep the best (``order=top``) or worst N rows of the breakdown.
        products: Filter to these products (id or exact name, case-insensitive).
        categories: Filter to these product categories (case-insensitive).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Metric
    period: PeriodSpec | Period | str
    group_by: GroupBy = GroupBy.NONE
    compare: Comparison = Comparison.NONE
    weeks: int = Field(default=4, ge=1, le=12)
    top_n: int | None = Field(default=None, ge=1, le=100)
    order: Order = Order.TOP
    products: tuple[str, ...] = Field(default=(), max_length=20)
    categories: tuple[str, ...] = Field(default=(), max_length=20)

    @field_validator("period")
    @classmethod
    def _short_text(cls, value: PeriodSpec | Period | str) -> PeriodSpec | Period | str:
        if isinstance(value, str) and not 0 < len(value) <= 200:
            raise ValueError("a period expression is 1 to 200 characters")
        return value

    @field_validator("products", "categories")
    @classmethod
    def _names(cls, values: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(v.strip() for v in values)
        if any(not v or len(v) > 200 for v in cleaned):
            raise ValueError("names are 1 to 200 characters")
        return cleaned

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.top_n is not None and self.group_by is GroupBy.NONE and self.metric is not Metric.PAYMENT_METHOD_MIX:
            raise ValueError("top_n needs a group_by")
        return self


class ExecutedQuery(BaseModel):
    """The statement that produced a result, with its parameters (JSON-friendly)."""

    model_config = ConfigDict(frozen=True)

    sql: str
    params: dict[str, Any]
    source: str


class MetricRow(BaseModel):
    """One bucket of a breakdown.

    ``key`` is stable (ISO date, ``2026-W10``, ``2026-03``, ``"14"`` for
    14:00-15:00, ISO weekday ``"1"`` = Monday, product id, category, payment
    method); ``label`` is for people. ``detail`` holds the parts of a value
    (the mix's transactions and gross sales).
    """

    key: str
    label: str
    value: Value | None
    baseline: Value | None = None
    change: Value | None = None
    change_pct: Decimal | None = None
    detail: dict[str, Value] = Field(default_factory=dict)


class ComparisonResult(BaseModel):
    """The baseline a result's total is compared with."""

    kind: Comparison
    label: str
    periods: list[Period]
    values: list[Value | None]  # the total in each baseline period
    baseline: Value | None
    change: Value | None
    change_pct: Decimal | None


class Fact(BaseModel):
    """One computed number, as the orchestrator cites it."""

    name: str  # metric name
    label: str  # "Net sales", "Net sales, Card", "Net sales vs previous period"
    kind: str  # value | share | baseline | change | change_pct | count
    value: Value | None
    unit: str  # currency code, a count noun, or "%"
    period: Period
    group: str | None = None
    query: ExecutedQuery


class MetricResult(BaseModel):
    """A metric over a period, maybe broken down and compared."""

    merchant_id: str
    metric: Metric
    label: str
    unit: Unit
    display_unit: str  # currency code, count noun or "%"
    currency: str
    timezone: str
    as_of: date
    period: Period
    group_by: GroupBy
    total: Value | None
    rows: list[MetricRow]
    comparison: ComparisonResult | None
    query: ExecutedQuery
    elapsed_ms: float = 0.0

    def facts(self) -> list[Fact]:
        """Every number of the result as a citable fact."""
        out: list[Fact] = []

        def add(label: str, kind: str, value: Value | None, unit: str, period: Period, group: str | None) -> None:
            out.append(
                Fact(
                    name=self.metric.value,
                    label=label,
                    kind=kind,
                    value=value,
                    unit=unit,
                    period=period,
                    group=group,
                    query=self.query,
                )
            )

        if self.metric is not Metric.PAYMENT_METHOD_MIX:
            add(self.label, "value", self.total, self.display_unit, self.period, None)
        for row in self.rows:
            if self.metric is Metric.PAYMENT_METHOD_MIX:
                add(f"{self.label}, {row.label}", "share", row.value, "%", self.period, row.label)
                tx = row.detail.get("transactions")
                if tx is not None:
                    add(f"Transactions, {row.label}", "count", tx, "transactions", self.period, row.label)
            else:
                add(f"{self.label}, {row.label}", "value", row.value, self.display_unit, self.period, row.label)
            if row.baseline is not None and self.comparison is not None:
                unit = "%" if self.metric is Metric.PAYMENT_METHOD_MIX else self.display_unit
                add(f"{self.label}, {row.label}, {self.comparison.label}", "baseline", row.baseline, unit,
                    self.comparison.periods[0], row.label)  # fmt: skip
                if row.change_pct is not None:
                    add(f"{self.label}, {row.label}, change", "change_pct", row.change_pct, "%", self.period, row.label)
        cmp = self.comparison
        if cmp is not None and self.metric is not Metric.PAYMENT_METHOD_MIX:
            add(f"{self.label}, {cmp.label}", "baseline", cmp.baseline, self.display_unit, cmp.periods[0], None)
            add(f"{self.label}, change vs {cmp.label}", "change", cmp.change, self.display_unit, self.period, None)
            if cmp.change_pct is not None:
                add(f"{self.label}, change vs {cmp.label}", "change_pct", cmp.change_pct, "%", self.period, None)
        return out


# --------------------------------------------------------------------------
# Planning
# --------------------------------------------------------------------------


class MerchantContext(BaseModel):
    """What the layer needs to know about the merchant (from its row)."""

    model_config = ConfigDict(frozen=True)

    merchant_id: str
    timezone: str
    currency: str


class Plan(BaseModel):
    """A query ready to run: SQL, parameters and the periods it covers (index 0 is the asked one)."""

    model_config = ConfigDict(frozen=True)

    query: MetricQuery
    merchant: MerchantContext
    as_of: date
    periods: list[Period]
    source: Source
    sql: str
    params: dict[str, Any]


_MERCHANT = text("SELECT timezone, currency FROM merchants WHERE merchant_id = :merchant_id")


def plan_metric_query(query: MetricQuery, merchant: MerchantContext, as_of: date | None = None) -> Plan:
    """Resolve periods, choose the source and build the statement (no database access).

    Raises:
        ValidationFailedError: The period cannot be resolved.
        UnsupportedQueryError: The metric is not defined for the breakdown or filters.
    """
    today = as_of if as_of is not None else today_in(merchant.timezone)
    period = resolve_period(query.period, merchant.timezone, today)
    periods = [period]
    if query.compare is Comparison.PREVIOUS_PERIOD:
        periods.append(period.previous())
    elif query.compare is Comparison.SAME_WEEKDAY:
        periods.extend(period.shifted(-7 * k) for k in range(1, query.weeks + 1))
    single_days = all(p.days == 1 for p in periods)
    product_filter = bool(query.products or query.categories)
    source = choose_source(query.metric, query.group_by, product_filter, single_days)
    statement = build_statement(
        query.metric, query.group_by, source, products=bool(query.products), categories=bool(query.categories)
    )
    params: dict[str, Any] = {
        "merchant_id": merchant.merchant_id,
        "starts": [p.start for p in periods],
        "ends": [p.end for p in periods],
    }
    if ":tz" in statement.sql:
        params["tz"] = merchant.timezone
    if query.products:
        params["products"] = list(query.products)
        params["product_names"] = [p.lower() for p in query.products]
    if query.categories:
        params["categories"] = [c.lower() for c in query.categories]
    return Plan(
        query=query, merchant=merchant, as_of=today, periods=periods, source=source,
        sql=textwrap.dedent(statement.sql).strip(), params=params,
    )  # fmt: skip


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    def conv(v: Any) -> Any:
        if isinstance(v, date):
            return v.isoformat()
        if isinstance(v, list):
            return [conv(x) for x in v]
        return v

    return {k: conv(v) for k, v in params.items()}


# --------------------------------------------------------------------------
# Assembling
# --------------------------------------------------------------------------

_Raw = tuple[int, int | None, int | None]  # num, den, extra (minor units or counts)
_ZERO: _Raw = (0, None, None)
_METHOD_LABELS = {"CARD": "Card", "CONTACTLESS": "Contactless", "WALLET": "Wallet", "CASH": "Cash", "QR": "QR"}
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def _time_keys(group: GroupBy, period: Period) -> list[tuple[str, str]]:
    """Every bucket of a time breakdown in the period, in order, with labels."""
    days = [period.start + timedelta(days=i) for i in range(period.days)]
    if group is GroupBy.DAY:
        return [(d.isoformat(), describe(d, d + timedelta(days=1))) for d in days]
    if group is GroupBy.WEEK:
        weeks: dict[str, str] = {}
        for d in days:
            iso = d.isocalendar()
            monday = d - timedelta(days=d.weekday())
            weeks.setdefault(f"{iso.year}-W{iso.week:02d}", f"week {iso.year}-W{iso.week:02d} (from {monday})")
        return list(weeks.items())
    if group is GroupBy.MONTH:
        months: dict[str, str] = {}
        for d in days:
            first = d.replace(day=1)
            months.setdefault(f"{d.year}-{d.month:02d}", describe(first, (first + timedelta(days=32)).replace(day=1)))
        return list(months.items())
    if group is GroupBy.WEEKDAY:
        present = sorted({d.isoweekday() for d in days})
        return [(str(n), _WEEKDAY_NAMES[n - 1]) for n in present]
    return [(f"{h:02d}", f"{h:02d}:00-{(h + 1) % 24:02d}:00") for h in range(24)]


def _label(group: GroupBy, key: str, name: str | None) -> str:
    if group is GroupBy.PRODUCT:
        return name or key
    if group is GroupBy.CATEGORY:
        return key or "Uncategorised"
    if group is GroupBy.PAYMENT_METHOD:
        return _METHOD_LABELS.get(key, key.title())
    return key


class _Assembler:
    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.metric = plan.query.metric
        self.defn = definition(self.metric)
        self.currency = plan.merchant.currency

    def value(self, raw: _Raw | None, whole: _Raw | None = None) -> Value | None:
        """Presentable value of raw sums (``whole``: the total a share is of)."""
        num, den, _ = raw or _ZERO
        agg = self.defn.aggregation
        if agg is Aggregation.RATIO:
            q = ratio(num, den or 0)
            return None if q is None else to_major(q, self.currency)
        if agg is Aggregation.SHARE:
            q = ratio(num, (whole or _ZERO)[0])
            return None if q is None else rounded(q * 100, 1)
        if self.defn.unit is Unit.MONEY:
            return to_major(num, self.currency)
        return int(num)

    def baseline(self, raws: Sequence[_Raw | None], wholes: Sequence[_Raw | None]) -> Value | None:
        """The comparison value over one or more baseline periods."""
        if not raws:
            return None
        if len(raws) == 1:
            return self.value(raws[0], wholes[0] if wholes else None)
        agg = self.defn.aggregation
        nums = [(r or _ZERO)[0] for r in raws]
        if agg is Aggregation.RATIO:
            q = ratio(sum(nums), sum((r or _ZERO)[1] or 0 for r in raws))
            return None if q is None else to_major(q, self.currency)
        if agg is Aggregation.SHARE:
            q = ratio(sum(nums), sum((w or _ZERO)[0] for w in wholes))
            return None if q is None else rounded(q * 100, 1)
        mean = Decimal(sum(nums)) / len(nums)
        if self.defn.unit is Unit.MONEY:
            return to_major(mean, self.currency)
        return int(mean) if mean == mean.to_integral_value() else rounded(mean, 2)

    @staticmethod
    def change(value: Value | None, base: Value | None) -> tuple[Value | None, Decimal | None]:
        if value is None or base is None:
            return None, None
        delta = value - base
        pct = rounded(Decimal(delta) / Decimal(base) * 100, 1) if base else None
        return delta, pct

    def assemble(self, rows: Sequence[Row[Any]], elapsed_ms: float) -> MetricResult:
        plan, query = self.plan, self.plan.query
        group = GroupBy.PAYMENT_METHOD if self.metric is Metric.PAYMENT_METHOD_MIX else query.group_by
        n = len(plan.periods)
        totals: list[_Raw | None] = [None] * n
        buckets: list[dict[str, _Raw]] = [{} for _ in range(n)]
        names: dict[str, str] = {}
        for r in rows:
            idx = int(r.idx) - 1
            raw: _Raw = (
                int(r.num or 0),
                None if r.den is None else int(r.den),
                None if r.extra is None else int(r.extra),
            )
            if int(r.is_total) == 1:
                totals[idx] = raw
            else:
                buckets[idx][str(r.bucket)] = raw
                if r.bucket_label is not None:
                    names[str(r.bucket)] = str(r.bucket_label)

        period = plan.periods[0]
        total = None if self.metric is Metric.PAYMENT_METHOD_MIX else self.value(totals[0])
        base_raws, base_wholes = totals[1:], totals[1:]

        comparison = None
        if query.compare is not Comparison.NONE:
            base = self.baseline(base_raws, base_wholes)
            change, pct = self.change(total, base)
            label = (
                "previous period"
                if query.compare is Comparison.PREVIOUS_PERIOD
                else f"average of the same {'weekday' if period.days == 1 else 'days'} over {query.weeks} weeks before"
            )
            comparison = ComparisonResult(
                kind=query.compare, label=label, periods=plan.periods[1:],
                values=[self.value(t, t) for t in base_raws], baseline=base, change=change, change_pct=pct,
            )  # fmt: skip

        out: list[MetricRow] = []
        if group is not GroupBy.NONE:
            if group in TIME_GROUPS:
                keyed = [(k, lbl) for k, lbl in _time_keys(group, period)]
                keyed += [(k, k) for k in buckets[0] if k not in dict(keyed)]
            else:
                keyed = [(k, _label(group, k, names.get(k))) for k in buckets[0]]
            # Baselines per row only where keys mean the same thing in every period.
            aligned = comparison is not None and group not in (GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH)
            for key, lbl in keyed:
                found = buckets[0].get(key)
                value = self.value(found if found is not None else _ZERO, totals[0])
                row = MetricRow(key=key, label=lbl, value=value)
                if self.metric is Metric.PAYMENT_METHOD_MIX and found is not None:
                    row.detail = {"transactions": found[0], "gross_sales": to_major(found[2] or 0, self.currency)}
                elif self.defn.aggregation is Aggregation.RATIO and found is not None:
                    row.detail = {"gross_sales": to_major(found[0], self.currency), "transactions": found[1] or 0}
                if aligned:
                    row.baseline = self.baseline([b.get(key) for b in buckets[1:]], base_wholes)
                    row.change, row.change_pct = self.change(row.value, row.baseline)
                out.append(row)
            ranked = query.top_n is not None or group not in TIME_GROUPS
            if ranked:
                sign = -1 if query.order is Order.TOP else 1
                present = [r for r in out if r.value is not None]
                present.sort(key=lambda r: (sign * r.value if r.value is not None else 0, r.key))
                out = present + [r for r in out if r.value is None]
            if query.top_n is not None:
                out = out[: query.top_n]

        return MetricResult(
            merchant_id=plan.merchant.merchant_id,
            metric=self.metric,
            label=self.defn.label,
            unit=self.defn.unit,
            display_unit=self.currency
            if self.defn.unit is Unit.MONEY
            else ("%" if self.defn.unit is Unit.PERCENT else self.defn.count_noun),
            currency=self.currency,
            timezone=plan.merchant.timezone,
            as_of=plan.as_of,
            period=period,
            group_by=group,
            total=total,
            rows=out,
            comparison=comparison,
            query=ExecutedQuery(sql=plan.sql, params=_jsonable(plan.params), source=plan.source.value),
            elapsed_ms=round(elapsed_ms, 3),
        )


def assemble_result(plan: Plan, rows: Sequence[Row[Any]], elapsed_ms: float = 0.0) -> MetricResult:
    """Turn the statement's rows into a :class:`MetricResult`."""
    return _Assembler(plan).assemble(rows, elapsed_ms)


# --------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------


def load_merchant(session: Session | Connection, merchant_id: str) -> MerchantContext:
    """The merchant's zone and currency, as the session may see them.

    Raises:
        MerchantNotVisibleError: No such merchant in this session's scope.
    """
    row = session.execute(_MERCHANT, {"merchant_id": merchant_id}).one_or_none()
    if row is None:
        raise MerchantNotVisibleError(f"merchant {merchant_id} not found")
    return MerchantContext(merchant_id=merchant_id, timezone=row.timezone, currency=row.currency)


def run_metric_query(
    session: Session | Connection,
    merchant_id: str,
    query: MetricQuery,
    *,
    as_of: date | None = None,
    merchant: MerchantContext | None = None,
) -> MetricResult:
    """Compute a metric for one merchant.

    Args:
        session: A merchant-scoped session (``Database.merchant_session``) or connection.
        merchant_id: The merchant, from the authenticated context only.
        query: What to compute.
        as_of: The merchant-local date treated as today (default: today there).
        merchant: The merchant's zone and currency when already known (saves a round trip).

    Raises:
        MerchantNotVisibleError: The merchant is not visible in this session.
        ValidationFailedError: The period cannot be resolved, or the metric
            is not defined for the breakdown (:class:`UnsupportedQueryError`).
    """
    if merchant is None or merchant.merchant_id != merchant_id:
        merchant = load_merchant(session, merchant_id)
    plan = plan_metric_query(query, merchant, as_of)
    started = time.perf_counter()
    rows = session.execute(text(plan.sql), plan.params).all()
    return assemble_result(plan, rows, (time.perf_counter() - started) * 1000)


async def arun_metric_query(
    session: AsyncSession | AsyncConnection,
    merchant_id: str,
    query: MetricQuery,
    *,
    as_of: date | None = None,
    merchant: MerchantContext | None = None,
) -> MetricResult:
    """The async counterpart of :func:`run_metric_query`."""
    if merchant is None or merchant.merchant_id != merchant_id:
        row = (await session.execute(_MERCHANT, {"merchant_id": merchant_id})).one_or_none()
        if row is None:
            raise MerchantNotVisibleError(f"merchant {merchant_id} not found")
        merchant = MerchantContext(merchant_id=merchant_id, timezone=row.timezone, currency=row.currency)
    plan = plan_metric_query(query, merchant, as_of)
    started = time.perf_counter()
    rows = (await session.execute(text(plan.sql), plan.params)).all()
    return assemble_result(plan, rows, (time.perf_counter() - started) * 1000)


__all__ = [
    "Comparison",
    "ComparisonResult",
    "ExecutedQuery",
    "Fact",
    "MerchantContext",
    "MetricQuery",
    "MetricResult",
    "MetricRow",
    "Order",
    "Plan",
    "arun_metric_query",
    "assemble_result",
    "load_merchant",
    "plan_metric_query",
    "run_metric_query",
]
