"""Days and hours are the merchant's: DST days of 23 and 25 hours, zones ahead of UTC.

Each case lists transactions as local ISO timestamps with the offset in force
and the local (day, hour) they must land in. The UTC date of several of them
differs from their local date, so a UTC-based aggregation fails these tests.
"""

from __future__ import annotations

from collections import Counter
from datetime import date

import pytest

from pipelines.aggregates import refresh_pending
from pipelines.context import PipelineContext
from tests.oracle import diff
from tests.pipelines.aggregates.scenario import Scenario

D = date.fromisoformat

CASES = {
    # 2026-03-29: clocks jump from 02:00 to 03:00 (23-hour day, no hour 2).
    "berlin-spring": ("Europe/Berlin", [
        ("2026-03-28T23:59:59+01:00", D("2026-03-28"), 23),
        ("2026-03-29T00:00:00+01:00", D("2026-03-29"), 0),  # 2026-03-28 in UTC
        ("2026-03-29T01:59:59+01:00", D("2026-03-29"), 1),
        ("2026-03-29T03:00:00+02:00", D("2026-03-29"), 3),  # one second later
        ("2026-03-29T23:59:59+02:00", D("2026-03-29"), 23),
        ("2026-03-30T00:00:00+02:00", D("2026-03-30"), 0),
    ]),
    # 2026-10-25: 03:00 falls back to 02:00 (25-hour day, hour 2 twice).
    "berlin-autumn": ("Europe/Berlin", [
        ("2026-10-24T23:59:59+02:00", D("2026-10-24"), 23),
        ("2026-10-25T00:00:00+02:00", D("2026-10-25"), 0),
        ("2026-10-25T02:30:00+02:00", D("2026-10-25"), 2),
        ("2026-10-25T02:30:00+01:00", D("2026-10-25"), 2),  # the repeated hour, an hour later
        ("2026-10-25T23:59:59+01:00", D("2026-10-25"), 23),
        ("2026-10-26T00:00:00+01:00", D("2026-10-26"), 0),
    ]),
    # 2026-03-08: 02:00 jumps to 03:00.
    "new-york-spring": ("America/New_York", [
        ("2026-03-07T23:59:59-05:00", D("2026-03-07"), 23),  # 2026-03-08 in UTC
        ("2026-03-08T00:00:00-05:00", D("2026-03-08"), 0),
        ("2026-03-08T01:59:59-05:00", D("2026-03-08"), 1),
        ("2026-03-08T03:00:00-04:00", D("2026-03-08"), 3),
        ("2026-03-08T23:59:59-04:00", D("2026-03-08"), 23),
        ("2026-03-09T00:00:00-04:00", D("2026-03-09"), 0),
    ]),
    # 2026-11-01: 02:00 falls back to 01:00 (hour 1 twice).
    "new-york-autumn": ("America/New_York", [
        ("2026-10-31T23:59:59-04:00", D("2026-10-31"), 23),
        ("2026-11-01T00:00:00-04:00", D("2026-11-01"), 0),
        ("2026-11-01T01:30:00-04:00", D("2026-11-01"), 1),
        ("2026-11-01T01:30:00-05:00", D("2026-11-01"), 1),
        ("2026-11-01T23:59:59-05:00", D("2026-11-01"), 23),  # 2026-11-02 in UTC
        ("2026-11-02T00:00:00-05:00", D("2026-11-02"), 0),
    ]),
    # Ahead of UTC: the local day starts the previous UTC evening.
    "tokyo": ("Asia/Tokyo", [
        ("2026-06-30T23:59:59+09:00", D("2026-06-30"), 23),
        ("2026-07-01T00:00:00+09:00", D("2026-07-01"), 0),  # 2026-06-30T15:00Z
        ("2026-07-01T08:59:59+09:00", D("2026-07-01"), 8),  # still 2026-06-30 in UTC
        ("2026-07-01T23:30:00+09:00", D("2026-07-01"), 23),
    ]),
    "sydney-winter": ("Australia/Sydney", [
        ("2026-06-30T23:59:59+10:00", D("2026-06-30"), 23),
        ("2026-07-01T00:00:00+10:00", D("2026-07-01"), 0),
        ("2026-07-01T09:30:00+10:00", D("2026-07-01"), 9),  # 2026-06-30T23:30Z
    ]),
    # Southern autumn: 2026-04-05 03:00 falls back to 02:00.
    "sydney-autumn": ("Australia/Sydney", [
        ("2026-04-05T00:00:00+11:00", D("2026-04-05"), 0),
        ("2026-04-05T02:30:00+11:00", D("2026-04-05"), 2),
        ("2026-04-05T02:30:00+10:00", D("2026-04-05"), 2),
        ("2026-04-05T23:59:59+10:00", D("2026-04-05"), 23),
    ]),
    # The Azores change at local midnight: on 2026-10-25 01:00 falls back to
    # 00:00, so 00:xx happens twice, and PostgreSQL reads the ambiguous local
    # midnight as the *later* instant; on 2026-03-29 there is no 00:xx at all.
    "azores": ("Atlantic/Azores", [
        ("2026-03-28T23:59:59-01:00", D("2026-03-28"), 23),
        ("2026-03-29T01:00:00+00:00", D("2026-03-29"), 1),
        ("2026-10-24T23:59:00+00:00", D("2026-10-24"), 23),
        ("2026-10-25T00:30:00+00:00", D("2026-10-25"), 0),  # first 00:30
        ("2026-10-25T00:30:00-01:00", D("2026-10-25"), 0),  # second 00:30
        ("2026-10-25T23:59:59-01:00", D("2026-10-25"), 23),
    ]),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_transactions_land_on_the_merchants_local_day_and_hour(
    ctx: PipelineContext, scenario: Scenario, case: str
) -> None:
    zone, stamps = CASES[case]
    m = scenario.merchant("M1", zone)
    for n, (at, _, _) in enumerate(stamps, start=1):
        scenario.txn(m, at, 100 * n, customer=f"C{n}", items=[("p", 1, 100 * n)])
    queued = scenario.commit()

    summary = refresh_pending(ctx)

    assert summary.merchant_days == len(queued)
    actual = scenario.actual()
    per_hour = Counter((day, hour) for _, day, hour in stamps)
    assert {(d, h): row["transactions"] for (_, d, h), row in actual.hourly.items()} == per_hour
    per_day = Counter(day for _, day, _ in stamps)
    assert {d: row["transactions"] for (_, d), row in actual.daily.items()} == per_day
    assert {d: row["gross_sales_minor"] for (_, d), row in actual.daily.items()} == {
        day: sum(100 * n for n, (_, d, _) in enumerate(stamps, start=1) if d == day) for day in per_day
    }
    assert diff(scenario.expected(), actual) == []


def test_the_repeated_autumn_hour_is_one_row(ctx: PipelineContext, scenario: Scenario) -> None:
    m = scenario.merchant("M1", "Europe/Berlin")
    scenario.txn(m, "2026-10-25T02:10:00+02:00", 1000, customer="A")
    scenario.txn(m, "2026-10-25T02:10:00+01:00", 500, customer="A", type="REFUND")
    scenario.txn(m, "2026-10-25T02:50:00+01:00", 700, customer="B")
    scenario.commit()

    refresh_pending(ctx)

    hours = {h: row for (_, _, h), row in scenario.actual().hourly.items()}
    assert list(hours) == [2]
    assert (hours[2]["transactions"], hours[2]["gross_sales_minor"], hours[2]["refunds_minor"]) == (2, 1700, 500)
    assert hours[2]["unique_customers"] == 2
