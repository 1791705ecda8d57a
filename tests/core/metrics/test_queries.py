"""Every metric, breakdown, time expression and comparison against the independent reference.

Queries run as the RLS-bound app role in each merchant's own session
(``Database.merchant_session``), exactly as the ask graph will run them.
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import text

from core.db import Database
from core.db.session import session_scope
from core.metrics import (
    Comparison,
    GroupBy,
    MerchantNotVisibleError,
    Metric,
    MetricQuery,
    MetricResult,
    Order,
    PeriodKind,
    PeriodSpec,
    Source,
    UnsupportedQueryError,
    load_merchant,
    plan_metric_query,
    run_metric_query,
)
from core.metrics.definitions import CATALOGUE, Aggregation
from tests.core.metrics.reference import Reference, Value
from tests.core.metrics.test_periods import CASES

MERCHANTS = ("M0001", "M0002", "M0003", "M0004", "M0005", "M0006")
AS_OF = date(2026, 1, 5)
WHOLE = PeriodSpec(kind=PeriodKind.RANGE, start=date(2025, 10, 4), end=date(2026, 1, 5))
DST = PeriodSpec(kind=PeriodKind.RANGE, start=date(2025, 10, 24), end=date(2025, 11, 3))  # EU + US fall-back

SIMPLE = [m for m in Metric if m is not Metric.PAYMENT_METHOD_MIX]
GROUPS = {
    m: (
        [GroupBy.NONE, GroupBy.DAY, GroupBy.WEEK, GroupBy.MONTH]
        if m is Metric.RETURNING_CUSTOMERS
        else [
            GroupBy.NONE,
            GroupBy.DAY,
            GroupBy.WEEK,
            GroupBy.MONTH,
            GroupBy.HOUR_OF_DAY,
            GroupBy.WEEKDAY,
            GroupBy.PAYMENT_METHOD,
        ]
    )
    for m in SIMPLE
}


def run(db: Database, merchant_id: str, query: MetricQuery, as_of: date = AS_OF) -> MetricResult:
    with db.merchant_session(merchant_id) as session:
        return run_metric_query(session, merchant_id, query, as_of=as_of)


def _empty(metric: Metric) -> Value:
    return None if CATALOGUE[metric].aggregation is Aggregation.RATIO else 0


def assert_matches(result: MetricResult, total: Value, buckets: dict[str, Value], *, filled: bool = True) -> None:
    metric = result.metric
    assert result.total == total, (result.query.source, result.period.label)
    got = {r.key: r.value for r in result.rows}
    # Time breakdowns list every bucket, with zeros where nothing happened.
    expected = {k: buckets.get(k, _empty(metric)) for k in got.keys() | buckets.keys()} if filled else buckets
    assert got == expected, (result.query.source, result.group_by)


@pytest.fixture(scope="module")
def db(metrics_db: Database) -> Database:
    return metrics_db


@pytest.mark.parametrize("metric", SIMPLE)
def test_every_metric_by_every_breakdown(db: Database, reference: Reference, metric: Metric) -> None:
    for merchant_id in MERCHANTS:
        for spec in (WHOLE, DST):
            start, end = spec.start, (spec.end or AS_OF) + timedelta(days=1)
            assert start is not None
            for group in GROUPS[metric]:
                result = run(db, merchant_id, MetricQuery(metric=metric, period=spec, group_by=group))
                assert (result.period.start, result.period.end) == (start, end)
                total, buckets = reference.compute(merchant_id, metric.value, start, end, group.value)
                assert_matches(result, total, buckets, filled=group is not GroupBy.PAYMENT_METHOD)


def test_the_sources_used(db: Database) -> None:
    def source(metric: Metric, group: GroupBy, spec: PeriodSpec = WHOLE) -> str:
        return run(db, "M0001", MetricQuery(metric=metric, period=spec, group_by=group)).query.source

    assert source(Metric.NET_SALES, GroupBy.WEEK) == Source.DAILY
    assert source(Metric.NET_SALES, GroupBy.HOUR_OF_DAY) == Source.HOURLY
    assert source(Metric.TRANSACTIONS, GroupBy.PAYMENT_METHOD) == Source.DAILY_METHODS
    assert source(Metric.UNIQUE_CUSTOMERS, GroupBy.NONE, PeriodSpec(kind=PeriodKind.YESTERDAY)) == Source.DAILY
    assert source(Metric.UNIQUE_CUSTOMERS, GroupBy.WEEK) == Source.FACTS
    assert source(Metric.RETURNING_CUSTOMERS, GroupBy.NONE) == Source.RETURNING


def test_payment_method_mix(db: Database, reference: Reference) -> None:
    for merchant_id in MERCHANTS:
        result = run(db, merchant_id, MetricQuery(metric=Metric.PAYMENT_METHOD_MIX, period=WHOLE))
        _, shares = reference.compute(merchant_id, "payment_method_mix", date(2025, 10, 4), date(2026, 1, 6))
        assert {r.key: r.value for r in result.rows} == shares
        assert abs(sum(r.value for r in result.rows if r.value is not None) - 100) <= Decimal("0.5")
        assert [r.value for r in result.rows] == sorted((r.value for r in result.rows), reverse=True)
        counts = sum(int(r.detail["transactions"]) for r in result.rows)
        assert counts == run(db, merchant_id, MetricQuery(metric=Metric.TRANSACTIONS, period=WHOLE)).total


PRODUCT_CASES = [
    (GroupBy.PRODUCT, (), ()),
    (GroupBy.CATEGORY, (), ()),
    (GroupBy.DAY, (), ("__first_category__",)),
    (GroupBy.HOUR_OF_DAY, (), ("__first_category__",)),
    (GroupBy.NONE, ("__two_products__",), ()),
    (GroupBy.WEEKDAY, ("__two_products__",), ()),
]


@pytest.mark.parametrize("metric", [Metric.UNITS_SOLD, Metric.GROSS_SALES, Metric.TRANSACTIONS])
@pytest.mark.parametrize(("group", "products", "categories"), PRODUCT_CASES)
def test_product_and_category_metrics(
    db: Database,
    reference: Reference,
    metric: Metric,
    group: GroupBy,
    products: tuple[str, ...],
    categories: tuple[str, ...],
) -> None:
    for merchant_id in ("M0001", "M0004", "M0005"):
        mine = sorted((pid, v) for (m, pid), v in reference.products.items() if m == merchant_id)
        cats = sorted({c for _, (_, c) in mine if c})
        # One product by id, one by its name in another case: both ways of naming a product.
        prods = (mine[0][0], mine[1][1][0].upper()) if products else ()
        catf = (cats[0].upper(),) if categories else ()
        query = MetricQuery(metric=metric, period=DST, group_by=group, products=prods, categories=catf)
        result = run(db, merchant_id, query)
        total, buckets = reference.compute_products(
            merchant_id, metric.value, date(2025, 10, 24), date(2025, 11, 4), group.value, prods, catf
        )
        filled = group not in (GroupBy.PRODUCT, GroupBy.CATEGORY)
        if group is GroupBy.NONE:
            assert result.total == total
        else:
            got = {r.key: r.value for r in result.rows}
            expected = {k: buckets.get(k, 0) for k in got.keys() | buckets.keys()} if filled else buckets
            assert got == expected, result.query.source
        if group is GroupBy.PRODUCT:
            names = {pid: name for pid, (name, _) in mine}
            assert all(r.label == names[r.key] for r in result.rows)


def test_time_expressions_against_the_reference(db: Database, reference: Reference) -> None:
    # The hand-written cases whose as_of falls in the data, plus days on DST changes and boundaries.
    cases = [(e, a, s, n) for e, a, s, n, _, _ in CASES if date(2025, 10, 4) <= a <= AS_OF]
    cases += [
        ("today", date(2025, 10, 26), date(2025, 10, 26), date(2025, 10, 27)),  # Europe falls back
        ("yesterday", date(2025, 11, 3), date(2025, 11, 2), date(2025, 11, 3)),  # the US falls back
        ("today", date(2025, 10, 5), date(2025, 10, 5), date(2025, 10, 6)),  # Sydney springs forward
        ("last month", date(2025, 12, 1), date(2025, 11, 1), date(2025, 12, 1)),
        ("October", date(2025, 12, 15), date(2025, 10, 1), date(2025, 11, 1)),
        ("last week", date(2025, 11, 5), date(2025, 10, 27), date(2025, 11, 3)),
    ]
    assert len(cases) >= 15
    for expression, as_of, start, end in cases:
        for merchant_id in MERCHANTS:
            for metric in (Metric.NET_SALES, Metric.UNIQUE_CUSTOMERS):
                result = run(db, merchant_id, MetricQuery(metric=metric, period=expression), as_of=as_of)
                assert (result.period.start, result.period.end) == (start, end), expression
                total, _ = reference.compute(merchant_id, metric.value, start, end)
                assert result.total == total, (expression, as_of, merchant_id, metric)


def test_dst_days_by_hour(db: Database, reference: Reference) -> None:
    # Berlin's 2025-10-26 has 25 hours (02:xx twice, merged); Sydney's 2025-10-05 has no 02:xx.
    for merchant_id, day in (("M0001", date(2025, 10, 26)), ("M0005", date(2025, 10, 5)), ("M0002", date(2025, 11, 2))):
        spec = PeriodSpec(kind=PeriodKind.DATE, start=day)
        result = run(
            db, merchant_id, MetricQuery(metric=Metric.TRANSACTIONS, period=spec, group_by=GroupBy.HOUR_OF_DAY)
        )
        total, buckets = reference.compute(merchant_id, "transactions", day, day + timedelta(days=1), "hour_of_day")
        assert_matches(result, total, buckets)
        assert sum(int(r.value or 0) for r in result.rows) == result.total
    sydney = run(
        db, "M0005", MetricQuery(metric=Metric.NET_SALES, period="on 2025-10-05", group_by=GroupBy.HOUR_OF_DAY)
    )
    assert next(r for r in sydney.rows if r.key == "02").value == 0


def test_comparisons(db: Database, reference: Reference) -> None:
    for merchant_id in MERCHANTS:
        cur = reference.currency(merchant_id)
        # last month (December) vs November
        result = run(
            db,
            merchant_id,
            MetricQuery(metric=Metric.NET_SALES, period="last month", compare=Comparison.PREVIOUS_PERIOD),
        )
        dec, _ = reference.compute(merchant_id, "net_sales", date(2025, 12, 1), date(2026, 1, 1))
        nov, _ = reference.compute(merchant_id, "net_sales", date(2025, 11, 1), date(2025, 12, 1))
        cmp = result.comparison
        assert cmp is not None and result.total == dec and cmp.baseline == nov
        assert (cmp.periods[0].start, cmp.periods[0].end) == (date(2025, 11, 1), date(2025, 12, 1))
        assert isinstance(dec, Decimal) and isinstance(nov, Decimal)
        assert cmp.change == dec - nov
        assert cmp.change_pct == ((dec - nov) / nov * 100).quantize(Decimal("0.1"))

        # a Thursday vs the same weekday over the 4 weeks before (mean)
        day = date(2025, 12, 18)
        result = run(
            db, merchant_id,
            MetricQuery(metric=Metric.TRANSACTIONS, period="on 2025-12-18", compare=Comparison.SAME_WEEKDAY, weeks=4),
        )  # fmt: skip
        olds = [reference.compute(merchant_id, "transactions", day - timedelta(7 * k), day - timedelta(7 * k - 1))[0]
                for k in range(1, 5)]  # fmt: skip
        cmp = result.comparison
        assert cmp is not None and cmp.values == olds
        mean = Decimal(sum(int(v or 0) for v in olds)) / 4
        assert Decimal(cmp.baseline or 0) == mean
        assert [p.start.isoweekday() for p in cmp.periods] == [4, 4, 4, 4]

        # average ticket: the baseline is the ratio of the summed weeks, not a mean of ratios
        result = run(
            db, merchant_id,
            MetricQuery(metric=Metric.AVERAGE_TICKET, period="last week", compare=Comparison.SAME_WEEKDAY, weeks=2),
        )  # fmt: skip
        gross = [reference.compute(merchant_id, "gross_sales", s, s + timedelta(7))[0]
                 for s in (date(2025, 12, 22), date(2025, 12, 15))]  # fmt: skip
        txs = [reference.compute(merchant_id, "transactions", s, s + timedelta(7))[0]
               for s in (date(2025, 12, 22), date(2025, 12, 15))]  # fmt: skip
        assert result.comparison is not None
        expected = (sum(Decimal(str(g)) for g in gross) / sum(int(t or 0) for t in txs)).quantize(
            Decimal(1) if cur == "JPY" else Decimal("0.01"), rounding="ROUND_HALF_UP"
        )
        assert result.comparison.baseline == expected

        # per-row baselines where keys line up (payment methods)
        result = run(
            db, merchant_id,
            MetricQuery(metric=Metric.GROSS_SALES, period="last month", group_by=GroupBy.PAYMENT_METHOD,
                        compare=Comparison.PREVIOUS_PERIOD),
        )  # fmt: skip
        _, by_method = reference.compute(
            merchant_id, "gross_sales", date(2025, 11, 1), date(2025, 12, 1), "payment_method"
        )
        assert {r.key: r.baseline for r in result.rows} == {r.key: by_method.get(r.key, 0) for r in result.rows}


def test_top_and_bottom_n(db: Database, reference: Reference) -> None:
    for merchant_id in MERCHANTS:
        _, units = reference.compute_products(merchant_id, "units_sold", date(2025, 10, 4), date(2026, 1, 6), "product")
        ranked = sorted(units.items(), key=lambda kv: (-int(kv[1] or 0), kv[0]))
        top = run(
            db, merchant_id, MetricQuery(metric=Metric.UNITS_SOLD, period=WHOLE, group_by=GroupBy.PRODUCT, top_n=3)
        )
        assert [(r.key, r.value) for r in top.rows] == ranked[:3]
        bottom = run(
            db, merchant_id,
            MetricQuery(metric=Metric.UNITS_SOLD, period=WHOLE, group_by=GroupBy.PRODUCT, top_n=2, order=Order.BOTTOM),
        )  # fmt: skip
        assert [(r.key, r.value) for r in bottom.rows] == sorted(
            units.items(), key=lambda kv: (int(kv[1] or 0), kv[0])
        )[:2]
        assert top.total == sum(int(v or 0) for v in units.values())  # the total is over all products

        _, by_hour = reference.compute(merchant_id, "net_sales", date(2025, 12, 1), date(2026, 1, 1), "hour_of_day")
        best = run(
            db,
            merchant_id,
            MetricQuery(metric=Metric.NET_SALES, period="December", group_by=GroupBy.HOUR_OF_DAY, top_n=1),
        )
        assert [(best.rows[0].key, best.rows[0].value)] == sorted(
            by_hour.items(), key=lambda kv: (-(kv[1] or 0), kv[0])
        )[:1]


def test_results_carry_units_facts_and_their_query(db: Database, reference: Reference) -> None:
    result = run(db, "M0004", MetricQuery(metric=Metric.NET_SALES, period="last week", compare="previous_period"))
    assert result.currency == result.display_unit == "JPY" and result.timezone == "Asia/Tokyo"
    assert isinstance(result.total, Decimal) and result.total == result.total.to_integral_value()  # JPY: no decimals
    facts = result.facts()
    assert [f.kind for f in facts] == ["value", "baseline", "change", "change_pct"]
    assert facts[0].value == result.total and facts[0].unit == "JPY" and facts[0].period == result.period
    assert facts[0].query.params["merchant_id"] == "M0004"
    assert "M0004" not in facts[0].query.sql  # the scope is a bound parameter, never spliced into SQL
    assert facts[0].query.params["starts"] == ["2025-12-29", "2025-12-22"]

    eur = run(db, "M0001", MetricQuery(metric=Metric.AVERAGE_TICKET, period="yesterday"))
    assert eur.display_unit == "EUR" and isinstance(eur.total, Decimal) and eur.total.as_tuple().exponent == -2
    count = run(db, "M0001", MetricQuery(metric=Metric.UNIQUE_CUSTOMERS, period="yesterday"))
    assert count.display_unit == "customers" and isinstance(count.total, int)


def test_unsupported_and_invalid_queries(db: Database) -> None:
    with pytest.raises(UnsupportedQueryError):
        run(db, "M0001", MetricQuery(metric=Metric.REFUNDS, period=WHOLE, group_by=GroupBy.PRODUCT))
    with pytest.raises(UnsupportedQueryError):
        run(db, "M0001", MetricQuery(metric=Metric.RETURNING_CUSTOMERS, period=WHOLE, group_by=GroupBy.HOUR_OF_DAY))
    with pytest.raises(UnsupportedQueryError):
        run(db, "M0001", MetricQuery(metric=Metric.PAYMENT_METHOD_MIX, period=WHOLE, group_by=GroupBy.DAY))
    from core.errors import ValidationFailedError

    with pytest.raises(ValidationFailedError):
        run(db, "M0001", MetricQuery(metric=Metric.NET_SALES, period="next year"))
    with pytest.raises(ValueError):
        MetricQuery.model_validate({"metric": "net_sales; DROP TABLE transactions", "period": "today"})
    with pytest.raises(ValueError):
        MetricQuery.model_validate({"metric": "net_sales", "period": "today", "sql": "SELECT 1"})
    with pytest.raises(ValueError):
        MetricQuery.model_validate({"metric": "net_sales", "period": "today", "merchant_id": "M0002"})


def test_isolation(db: Database, reference: Reference) -> None:
    query = MetricQuery(metric=Metric.NET_SALES, period=WHOLE)
    # A's session cannot even see B.
    with db.merchant_session("M0001") as session, pytest.raises(MerchantNotVisibleError):
        run_metric_query(session, "M0002", query, as_of=AS_OF)
    # B's statement run in A's session (as if the lookup were bypassed) returns nothing of B's.
    with db.merchant_session("M0002") as session:
        m2 = load_merchant(session, "M0002")
    plan = plan_metric_query(query, m2, AS_OF)
    with db.merchant_session("M0001") as session:
        assert [r for r in session.execute(text(plan.sql), plan.params).all() if r.num] == []
    # The app role with no merchant set sees nothing at all.
    with session_scope(db.app_sessions, None) as session:
        with pytest.raises(MerchantNotVisibleError):
            run_metric_query(session, "M0001", query, as_of=AS_OF)
        assert [r for r in session.execute(text(plan.sql), plan.params).all() if r.num] == []
    # While in its own session, each merchant gets exactly its own numbers.
    for merchant_id in MERCHANTS:
        total, _ = reference.compute(merchant_id, "net_sales", date(2025, 10, 4), date(2026, 1, 6))
        assert run(db, merchant_id, query).total == total


def test_the_async_path_gives_the_same_result(db: Database) -> None:
    import asyncio

    from core.db import async_session_scope, create_async_db_engine, make_async_sessionmaker
    from core.metrics import arun_metric_query

    query = MetricQuery(metric=Metric.UNIQUE_CUSTOMERS, period="last week", group_by=GroupBy.DAY)

    async def go() -> MetricResult:
        engine = create_async_db_engine(db.app_url, db.settings)
        try:
            async with async_session_scope(make_async_sessionmaker(engine), "M0003") as session:
                return await arun_metric_query(session, "M0003", query, as_of=AS_OF)
        finally:
            await engine.dispose()

    got = asyncio.run(go())
    want = run(db, "M0003", query)
    assert got.model_dump(exclude={"elapsed_ms"}) == want.model_dump(exclude={"elapsed_ms"})


def test_aggregate_metrics_read_the_aggregates_not_the_facts(db: Database) -> None:
    # A guard against a plan that scans the facts by mistake (speed itself is bench/ask.py's job).
    query = MetricQuery(metric=Metric.NET_SALES, period="last month", compare="same_weekday", group_by=GroupBy.WEEKDAY)
    with db.merchant_session("M0001") as session:
        result = run_metric_query(session, "M0001", query, as_of=AS_OF)
    assert "daily_metrics" in result.query.sql
    assert "FROM transactions" not in result.query.sql and "JOIN transactions" not in result.query.sql
