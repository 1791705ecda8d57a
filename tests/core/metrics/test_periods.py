"""Time expressions: the parser and the resolver, against dates written out by hand."""

from __future__ import annotations

from datetime import date

import pytest

from core.errors import ValidationFailedError
from core.metrics import Grain, PeriodKind, PeriodSpec, parse_period, parse_periods, resolve_period
from core.metrics.periods import Period

D = date

# (expression, as_of, start, end exclusive, grain, to_date)
CASES = [
    ("today", D(2026, 1, 5), D(2026, 1, 5), D(2026, 1, 6), Grain.DAY, False),
    ("yesterday", D(2026, 1, 1), D(2025, 12, 31), D(2026, 1, 1), Grain.DAY, False),  # year boundary
    ("the day before yesterday", D(2026, 3, 1), D(2026, 2, 27), D(2026, 2, 28), Grain.DAY, False),
    ("3 days ago", D(2026, 3, 1), D(2026, 2, 26), D(2026, 2, 27), Grain.DAY, False),
    ("this week", D(2026, 1, 1), D(2025, 12, 29), D(2026, 1, 2), Grain.WEEK, True),  # ISO week spans the year
    ("last week", D(2026, 1, 5), D(2025, 12, 29), D(2026, 1, 5), Grain.WEEK, False),
    ("last week", D(2026, 1, 4), D(2025, 12, 22), D(2025, 12, 29), Grain.WEEK, False),  # as_of a Sunday
    ("this month", D(2025, 11, 30), D(2025, 11, 1), D(2025, 12, 1), Grain.MONTH, False),  # last day: complete
    ("this month", D(2025, 11, 2), D(2025, 11, 1), D(2025, 11, 3), Grain.MONTH, True),
    ("month to date", D(2026, 2, 14), D(2026, 2, 1), D(2026, 2, 15), Grain.MONTH, True),
    ("last month", D(2026, 1, 5), D(2025, 12, 1), D(2026, 1, 1), Grain.MONTH, False),
    ("previous month", D(2026, 3, 31), D(2026, 2, 1), D(2026, 3, 1), Grain.MONTH, False),
    ("this year", D(2026, 1, 5), D(2026, 1, 1), D(2026, 1, 6), Grain.YEAR, True),
    ("last year", D(2026, 1, 5), D(2025, 1, 1), D(2026, 1, 1), Grain.YEAR, False),
    ("in 2025", D(2026, 1, 5), D(2025, 1, 1), D(2026, 1, 1), Grain.YEAR, False),
    ("March", D(2026, 1, 5), D(2025, 3, 1), D(2025, 4, 1), Grain.MONTH, False),  # most recent March
    ("December", D(2026, 1, 5), D(2025, 12, 1), D(2026, 1, 1), Grain.MONTH, False),
    ("January", D(2026, 1, 5), D(2026, 1, 1), D(2026, 1, 6), Grain.MONTH, True),
    ("March 2026", D(2026, 4, 2), D(2026, 3, 1), D(2026, 4, 1), Grain.MONTH, False),
    ("in feb 2024", D(2026, 4, 2), D(2024, 2, 1), D(2024, 3, 1), Grain.MONTH, False),  # leap February
    ("2026-03-01 to 2026-03-15", D(2026, 4, 2), D(2026, 3, 1), D(2026, 3, 16), Grain.RANGE, False),
    ("between 2025-12-30 and 2026-01-02", D(2026, 4, 2), D(2025, 12, 30), D(2026, 1, 3), Grain.RANGE, False),
    ("from 2026-03-01 until 2026-03-20", D(2026, 3, 10), D(2026, 3, 1), D(2026, 3, 11), Grain.RANGE, True),
    ("since 2025-12-25", D(2026, 1, 5), D(2025, 12, 25), D(2026, 1, 6), Grain.RANGE, False),
    ("on 2025-10-26", D(2026, 1, 5), D(2025, 10, 26), D(2025, 10, 27), Grain.DAY, False),
    ("last 7 days", D(2026, 1, 3), D(2025, 12, 28), D(2026, 1, 4), Grain.RANGE, False),
    ("past 30 days", D(2026, 3, 1), D(2026, 1, 31), D(2026, 3, 2), Grain.RANGE, False),
    ("the last two weeks", D(2026, 1, 5), D(2025, 12, 23), D(2026, 1, 6), Grain.RANGE, False),
    ("last 1 day", D(2026, 1, 5), D(2026, 1, 5), D(2026, 1, 6), Grain.DAY, False),
    ("the past week", D(2026, 1, 5), D(2025, 12, 30), D(2026, 1, 6), Grain.RANGE, False),
    ("on Monday", D(2026, 1, 7), D(2026, 1, 5), D(2026, 1, 6), Grain.DAY, False),
    ("last Wednesday", D(2026, 1, 7), D(2025, 12, 31), D(2026, 1, 1), Grain.DAY, False),  # never today
]


@pytest.mark.parametrize(("expression", "as_of", "start", "end", "grain", "to_date"), CASES)
def test_expressions_resolve_to_local_dates(
    expression: str, as_of: date, start: date, end: date, grain: Grain, to_date: bool
) -> None:
    period = resolve_period(expression, "Europe/Berlin", as_of)
    assert (period.start, period.end, period.grain, period.to_date) == (start, end, grain, to_date), period
    assert period.label


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What were my sales yesterday?", PeriodSpec(kind=PeriodKind.YESTERDAY)),
        ("how much did we make today", PeriodSpec(kind=PeriodKind.TODAY)),
        ("Revenue last week vs the week before", PeriodSpec(kind=PeriodKind.LAST_WEEK)),
        ("refunds this month so far", PeriodSpec(kind=PeriodKind.THIS_MONTH)),
        ("tips in March 2026", PeriodSpec(kind=PeriodKind.MONTH, month=3, year=2026)),
        ("top products in Sept", PeriodSpec(kind=PeriodKind.MONTH, month=9)),
        ("how many customers over the last 14 days", PeriodSpec(kind=PeriodKind.LAST_N_DAYS, n=14)),
        ("average ticket over the past three weeks", PeriodSpec(kind=PeriodKind.LAST_N_DAYS, n=21)),
        (
            "net sales 2026-03-01 – 2026-03-15",
            PeriodSpec(kind=PeriodKind.RANGE, start=D(2026, 3, 1), end=D(2026, 3, 15)),
        ),
        ("sales on 2026-03-05", PeriodSpec(kind=PeriodKind.DATE, start=D(2026, 3, 5))),
        ("YTD revenue", PeriodSpec(kind=PeriodKind.THIS_YEAR)),
        ("what did we sell in may?", PeriodSpec(kind=PeriodKind.MONTH, month=5)),
    ],
)
def test_the_parser_reads_common_phrasings(question: str, expected: PeriodSpec) -> None:
    assert parse_period(question) == expected


def test_may_the_verb_is_not_a_month_and_no_period_is_none() -> None:
    assert parse_period("May I see my sales?") is None
    assert parse_period("what is my best product") is None


def test_several_periods_come_in_order() -> None:
    kinds = [s.kind for s in parse_periods("this week compared with last week and last month")]
    assert kinds == [PeriodKind.THIS_WEEK, PeriodKind.LAST_WEEK, PeriodKind.LAST_MONTH]


def test_previous_periods() -> None:
    as_of = D(2026, 3, 10)
    month = resolve_period("last month", "UTC", as_of)  # February 2026
    assert (month.previous().start, month.previous().end) == (D(2026, 1, 1), D(2026, 2, 1))
    mtd = resolve_period("this month", "UTC", as_of)  # 1-10 March -> 1-10 February
    assert (mtd.previous().start, mtd.previous().end) == (D(2026, 2, 1), D(2026, 2, 11))
    mtd31 = resolve_period("this month", "UTC", D(2026, 3, 31))  # 31 days -> all of February only
    assert (mtd31.previous().start, mtd31.previous().end) == (D(2026, 2, 1), D(2026, 3, 1))
    week = resolve_period("this week", "UTC", as_of)  # Mon 9 - Tue 10
    assert (week.previous().start, week.previous().end) == (D(2026, 3, 2), D(2026, 3, 4))
    year = resolve_period("last year", "UTC", as_of)
    assert (year.previous().start, year.previous().end) == (D(2024, 1, 1), D(2025, 1, 1))
    days = resolve_period("last 7 days", "UTC", as_of)
    assert (days.previous().start, days.previous().end) == (D(2026, 2, 25), D(2026, 3, 4))


def test_structured_specs_and_errors() -> None:
    spec = PeriodSpec(kind=PeriodKind.MONTH, month=12, year=2025)
    assert resolve_period(spec, "Asia/Tokyo", D(2026, 1, 5)).start == D(2025, 12, 1)
    with pytest.raises(ValueError):
        PeriodSpec(kind=PeriodKind.LAST_N_DAYS)  # n missing
    with pytest.raises(ValidationFailedError):
        resolve_period("next month", "UTC", D(2026, 1, 5))  # nothing understood
    with pytest.raises(ValidationFailedError):
        resolve_period("2026-02-01 to 2026-02-03", "UTC", D(2026, 1, 5))  # in the future
    with pytest.raises(ValidationFailedError):
        resolve_period("today", "Mars/Olympus", None)


def test_default_as_of_is_today_in_the_merchants_zone() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    for tz in ("Pacific/Kiritimati", "Pacific/Pago_Pago"):  # UTC+14 and UTC-11: different dates most of the day
        assert resolve_period("today", tz).start == datetime.now(ZoneInfo(tz)).date()


def test_a_resolved_period_passes_through_clipped() -> None:
    p = Period(start=D(2026, 1, 1), end=D(2026, 2, 1), label="January 2026", grain=Grain.MONTH)
    clipped = resolve_period(p, "UTC", D(2026, 1, 10))
    assert (clipped.end, clipped.to_date) == (D(2026, 1, 11), True)
