"""Time periods in a merchant's local calendar, resolved relative to an ``as_of`` date.

A :class:`Period` is a half-open range of merchant-local dates
``[start, end)``. Expressions come either structured (:class:`PeriodSpec`,
what a model's tool call passes) or as English text, which
:func:`parse_period` turns into a spec deterministically. Resolution rules:

- ``as_of`` is "today" (default: today in the merchant's zone). Nothing after
  it exists yet, so every period ends at ``as_of`` at the latest; a period
  cut short is marked ``to_date`` ("this month" is month-to-date). A period
  starting after ``as_of`` is an error.
- Weeks are ISO weeks (Monday first). "last week" is the previous full week;
  "last N days" is the N days ending with ``as_of`` (today included).
- A named month without a year is the most recent one that has begun
  ("March" asked in January 2027 is March 2026). A weekday name is the most
  recent such day before ``as_of``.
- :meth:`Period.previous` is the comparable period before: the previous
  calendar unit for a week, month or year (the same number of days into it
  when the period is to-date), otherwise the same number of days just before.

    period = resolve_period("last month", "Europe/Berlin", as_of=date(2026, 3, 10))
    # Period(start=2026-02-01, end=2026-03-01, label="last month (February 2026)", grain=MONTH)
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.errors import ValidationFailedError

MAX_DAYS = 3 * 366  # longest period a query may span


class Grain(StrEnum):
    """The calendar unit a period is (or RANGE for any span of days)."""

    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"
    RANGE = "range"


class PeriodKind(StrEnum):
    """The time expressions the resolver understands."""

    TODAY = "today"
    YESTERDAY = "yesterday"
    DAYS_AGO = "days_ago"  # n
    THIS_WEEK = "this_week"
    LAST_WEEK = "last_week"
    THIS_MONTH = "this_month"
    LAST_MONTH = "last_month"
    THIS_YEAR = "this_year"
    LAST_YEAR = "last_year"
    LAST_N_DAYS = "last_n_days"  # n
    MONTH = "month"  # month, optional year
    YEAR = "year"  # year
    WEEKDAY = "weekday"  # weekday (1 = Monday)
    DATE = "date"  # start
    RANGE = "range"  # start, end (inclusive; None = up to as_of)


class PeriodSpec(BaseModel):
    """A structured time expression, e.g. ``{"kind": "last_n_days", "n": 7}``.

    ``end`` is inclusive, as people say it ("1 to 15 March"); the resolved
    :class:`Period` is half-open.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: PeriodKind
    n: int | None = Field(default=None, ge=1, le=MAX_DAYS)
    month: int | None = Field(default=None, ge=1, le=12)
    year: int | None = Field(default=None, ge=1970, le=2100)
    weekday: int | None = Field(default=None, ge=1, le=7)
    start: date | None = None
    end: date | None = None

    @model_validator(mode="after")
    def _complete(self) -> Self:
        needs = {
            PeriodKind.DAYS_AGO: ("n",),
            PeriodKind.LAST_N_DAYS: ("n",),
            PeriodKind.MONTH: ("month",),
            PeriodKind.YEAR: ("year",),
            PeriodKind.WEEKDAY: ("weekday",),
            PeriodKind.DATE: ("start",),
            PeriodKind.RANGE: ("start",),
        }.get(self.kind, ())
        missing = [name for name in needs if getattr(self, name) is None]
        if missing:
            raise ValueError(f"period kind {self.kind.value!r} needs {', '.join(missing)}")
        if self.kind is PeriodKind.RANGE and self.end is not None and self.start is not None and self.end < self.start:
            raise ValueError("range end is before its start")
        return self


class Period(BaseModel):
    """Merchant-local dates ``[start, end)``: ``end`` is exclusive."""

    model_config = ConfigDict(frozen=True)

    start: date
    end: date
    label: str
    grain: Grain
    to_date: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.end <= self.start:
            raise ValueError("a period needs end > start")
        return self

    @property
    def days(self) -> int:
        """Number of local days in the period."""
        return (self.end - self.start).days

    @property
    def last_day(self) -> date:
        """The last day included."""
        return self.end - timedelta(days=1)

    def previous(self) -> Period:
        """The comparable period just before this one (see the module docstring)."""
        if self.grain is Grain.WEEK:
            start = self.start - timedelta(days=7)
            return _make(start, start + timedelta(days=self.days), Grain.WEEK, self.to_date)
        if self.grain is Grain.MONTH:
            start = _add_months(self.start, -1)
            full = _add_months(start, 1)
            end = min(full, start + timedelta(days=self.days)) if self.to_date else full
            return _make(start, end, Grain.MONTH, self.to_date)
        if self.grain is Grain.YEAR:
            start = self.start.replace(year=self.start.year - 1)
            full = self.start
            end = min(full, start + timedelta(days=self.days)) if self.to_date else full
            return _make(start, end, Grain.YEAR, self.to_date)
        return _make(self.start - timedelta(days=self.days), self.start, self.grain)

    def shifted(self, days: int) -> Period:
        """The same span moved by ``days`` (negative: earlier)."""
        step = timedelta(days=days)
        return _make(self.start + step, self.end + step, Grain.DAY if self.days == 1 else Grain.RANGE)


def describe(start: date, end: date) -> str:
    """A short human description of ``[start, end)``."""
    last = end - timedelta(days=1)
    if start == last:
        return f"{calendar.day_abbr[start.weekday()]} {start.isoformat()}"
    if start.day == 1 and end == _add_months(start, 1):
        return f"{calendar.month_name[start.month]} {start.year}"
    if start.month == start.day == 1 and end == date(start.year + 1, 1, 1):
        return str(start.year)
    if start.weekday() == 0 and (end - start).days == 7:
        iso = start.isocalendar()
        return f"week {iso.year}-W{iso.week:02d}, {start.isoformat()} to {last.isoformat()}"
    return f"{start.isoformat()} to {last.isoformat()}"


def _make(start: date, end: date, grain: Grain, to_date: bool = False, name: str | None = None) -> Period:
    span = describe(start, end)
    return Period(start=start, end=end, label=f"{name} ({span})" if name else span, grain=grain, to_date=to_date)


def _add_months(day: date, months: int) -> date:
    """The first day of the month ``months`` after ``day``'s month."""
    index = day.year * 12 + day.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _week_start(day: date) -> date:
    return day - timedelta(days=day.weekday())


def today_in(tz: str | ZoneInfo) -> date:
    """Today's date in a time zone."""
    return datetime.now(zone(tz)).date()


def zone(tz: str | ZoneInfo) -> ZoneInfo:
    """A ZoneInfo for an IANA name (a clear error for an unknown one)."""
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValidationFailedError(f"unknown time zone {tz!r}") from exc


def resolve_period(expression: str | PeriodSpec | Period, tz: str | ZoneInfo, as_of: date | None = None) -> Period:
    """Resolve a time expression to local dates.

    Args:
        expression: English text ("last month", "March 2026", "2026-03-01 to
            2026-03-15", "last 7 days"), a :class:`PeriodSpec`, or an already
            resolved :class:`Period` (returned clipped to ``as_of``).
        tz: The merchant's IANA time zone.
        as_of: The date treated as today; defaults to today in ``tz``.

    Returns:
        The period, ending at ``as_of`` at the latest.

    Raises:
        ValidationFailedError: The text names no period, or the period starts after ``as_of``.
    """
    today = as_of if as_of is not None else today_in(tz)
    if isinstance(expression, Period):
        return _clip(expression, today, expression.label)
    spec = expression
    if isinstance(spec, str):
        parsed = parse_period(spec, today)
        if parsed is None:
            raise ValidationFailedError(f"no time period understood in {expression!r}")
        spec = parsed
    return _resolve(spec, today)


def _resolve(spec: PeriodSpec, today: date) -> Period:
    kind, one = spec.kind, timedelta(days=1)
    if kind is PeriodKind.TODAY:
        return _clip(_make(today, today + one, Grain.DAY), today, "today")
    if kind is PeriodKind.YESTERDAY:
        return _clip(_make(today - one, today, Grain.DAY), today, "yesterday")
    if kind is PeriodKind.DAYS_AGO:
        assert spec.n is not None
        day = today - timedelta(days=spec.n)
        return _clip(_make(day, day + one, Grain.DAY), today, f"{spec.n} days ago")
    if kind is PeriodKind.THIS_WEEK:
        start = _week_start(today)
        return _clip(_make(start, start + timedelta(days=7), Grain.WEEK), today, "this week")
    if kind is PeriodKind.LAST_WEEK:
        start = _week_start(today) - timedelta(days=7)
        return _clip(_make(start, start + timedelta(days=7), Grain.WEEK), today, "last week")
    if kind is PeriodKind.THIS_MONTH:
        start = today.replace(day=1)
        return _clip(_make(start, _add_months(start, 1), Grain.MONTH), today, "this month")
    if kind is PeriodKind.LAST_MONTH:
        start = _add_months(today, -1)
        return _clip(_make(start, _add_months(start, 1), Grain.MONTH), today, "last month")
    if kind is PeriodKind.THIS_YEAR:
        start = date(today.year, 1, 1)
        return _clip(_make(start, date(today.year + 1, 1, 1), Grain.YEAR), today, "this year")
    if kind is PeriodKind.LAST_YEAR:
        start = date(today.year - 1, 1, 1)
        return _clip(_make(start, date(today.year, 1, 1), Grain.YEAR), today, "last year")
    if kind is PeriodKind.LAST_N_DAYS:
        assert spec.n is not None
        start = today - timedelta(days=spec.n - 1)
        return _clip(_make(start, today + one, Grain.DAY if spec.n == 1 else Grain.RANGE), today, f"last {spec.n} days")
    if kind is PeriodKind.MONTH:
        assert spec.month is not None
        year = spec.year
        if year is None:
            year = today.year if spec.month <= today.month else today.year - 1
        start = date(year, spec.month, 1)
        return _clip(_make(start, _add_months(start, 1), Grain.MONTH), today, None)
    if kind is PeriodKind.YEAR:
        assert spec.year is not None
        return _clip(_make(date(spec.year, 1, 1), date(spec.year + 1, 1, 1), Grain.YEAR), today, None)
    if kind is PeriodKind.WEEKDAY:
        assert spec.weekday is not None
        back = (today.isoweekday() - spec.weekday - 1) % 7 + 1  # 1..7 days before today
        day = today - timedelta(days=back)
        return _clip(_make(day, day + one, Grain.DAY), today, calendar.day_name[spec.weekday - 1])
    if kind is PeriodKind.DATE:
        assert spec.start is not None
        return _clip(_make(spec.start, spec.start + one, Grain.DAY), today, None)
    assert spec.start is not None
    end = (spec.end if spec.end is not None else today) + one
    return _clip(_make(spec.start, end, Grain.DAY if end - spec.start == one else Grain.RANGE), today, None)


def _clip(period: Period, today: date, name: str | None) -> Period:
    """Cut the period at ``today`` (inclusive) and name it."""
    if period.start > today:
        raise ValidationFailedError(
            f"{name or period.label} starts after {today.isoformat()}: there is no data for it yet",
            period=period.label,
        )
    if period.days > MAX_DAYS:
        raise ValidationFailedError(f"{period.label} is longer than {MAX_DAYS} days")
    limit = today + timedelta(days=1)
    to_date = period.to_date or period.end > limit
    end = min(period.end, limit)
    span = describe(period.start, end)
    if end != period.end:
        whole = describe(period.start, period.end)
        span = f"{span}, to date" if name else f"{whole} to date ({span})"
    label = f"{name} ({span})" if name else span
    return Period(start=period.start, end=end, label=label, grain=period.grain, to_date=to_date)


# --------------------------------------------------------------------------
# English phrases -> PeriodSpec
# --------------------------------------------------------------------------

_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_MONTHS["sept"] = 9
_WEEKDAYS = {name.lower(): i + 1 for i, name in enumerate(calendar.day_name)}
_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "fourteen": 14, "fifteen": 15, "twenty": 20, "thirty": 30, "sixty": 60,
    "ninety": 90, "a": 1, "an": 1, "couple of": 2, "few": 3,
}  # fmt: skip

_ISO = r"(\d{4}-\d{2}-\d{2})"
_NUM = r"(\d{1,4}|" + "|".join(sorted(map(re.escape, _NUMBERS), key=len, reverse=True)) + ")"
_MONTH_NAMES = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAY_NAMES = "|".join(_WEEKDAYS)


def _number(text: str) -> int:
    return int(text) if text.isdigit() else _NUMBERS[text]


def _month(match: re.Match[str], today: date) -> PeriodSpec | None:
    word, year = match.group("m"), match.group("y")
    # "may" is usually the verb: only as a month with a year or after a preposition.
    if word == "may" and year is None and not match.group("pre"):
        return None
    return PeriodSpec(kind=PeriodKind.MONTH, month=_MONTHS[word], year=int(year) if year else None)


def _range(match: re.Match[str], today: date) -> PeriodSpec | None:
    start, end = date.fromisoformat(match.group(1)), date.fromisoformat(match.group(2))
    if end < start:
        start, end = end, start
    return PeriodSpec(kind=PeriodKind.RANGE, start=start, end=end)


def _last_n(match: re.Match[str], today: date) -> PeriodSpec | None:
    n = _number(match.group("n"))
    unit = match.group("u")
    days = n * 7 if unit.startswith("week") else n
    return PeriodSpec(kind=PeriodKind.LAST_N_DAYS, n=days)


# (pattern, builder). The longest match wins where matches overlap.
_Builder = Callable[[re.Match[str], date], PeriodSpec | None]
_PHRASES: list[tuple[re.Pattern[str], _Builder]] = [
    (re.compile(rf"\b(?:from|between)?\s*{_ISO}\s*(?:to|until|till|through|thru|and|-|–|—|\.\.)\s*{_ISO}\b"), _range),
    (
        re.compile(rf"\bsince\s+{_ISO}\b"),
        lambda m, t: PeriodSpec(kind=PeriodKind.RANGE, start=date.fromisoformat(m.group(1))),
    ),
    (re.compile(rf"\b{_ISO}\b"), lambda m, t: PeriodSpec(kind=PeriodKind.DATE, start=date.fromisoformat(m.group(1)))),
    (
        re.compile(
            rf"\b(?:last|past|previous|prior|recent)\s+{_NUM.replace('(', '(?P<n>', 1)}\s+(?P<u>days?|weeks?)\b"
        ),
        _last_n,
    ),
    (re.compile(r"\b(?:the\s+)?past\s+week\b"), lambda m, t: PeriodSpec(kind=PeriodKind.LAST_N_DAYS, n=7)),
    (re.compile(r"\b(?:the\s+)?past\s+month\b"), lambda m, t: PeriodSpec(kind=PeriodKind.LAST_N_DAYS, n=30)),
    (re.compile(r"\bthe\s+day\s+before\s+yesterday\b"), lambda m, t: PeriodSpec(kind=PeriodKind.DAYS_AGO, n=2)),
    (
        re.compile(rf"\b{_NUM.replace('(', '(?P<n>', 1)}\s+days?\s+ago\b"),
        lambda m, t: PeriodSpec(kind=PeriodKind.DAYS_AGO, n=_number(m.group("n"))),
    ),
    (
        re.compile(r"\btoday\b|\bso\s+far\s+today\b|\btonight\b|\bthis\s+morning\b"),
        lambda m, t: PeriodSpec(kind=PeriodKind.TODAY),
    ),
    (re.compile(r"\byesterday\b|\blast\s+night\b"), lambda m, t: PeriodSpec(kind=PeriodKind.YESTERDAY)),
    (
        re.compile(r"\b(?:this|current)\s+week\b|\bweek[\s-]to[\s-]date\b|\bwtd\b"),
        lambda m, t: PeriodSpec(kind=PeriodKind.THIS_WEEK),
    ),
    (re.compile(r"\b(?:last|previous|prior)\s+week\b"), lambda m, t: PeriodSpec(kind=PeriodKind.LAST_WEEK)),
    (
        re.compile(r"\b(?:this|current)\s+month\b|\bmonth[\s-]to[\s-]date\b|\bmtd\b"),
        lambda m, t: PeriodSpec(kind=PeriodKind.THIS_MONTH),
    ),
    (re.compile(r"\b(?:last|previous|prior)\s+month\b"), lambda m, t: PeriodSpec(kind=PeriodKind.LAST_MONTH)),
    (
        re.compile(r"\b(?:this|current)\s+year\b|\byear[\s-]to[\s-]date\b|\bytd\b"),
        lambda m, t: PeriodSpec(kind=PeriodKind.THIS_YEAR),
    ),
    (re.compile(r"\b(?:last|previous|prior)\s+year\b"), lambda m, t: PeriodSpec(kind=PeriodKind.LAST_YEAR)),
    (
        re.compile(rf"(?P<pre>\b(?:in|for|during|of|on)\s+)?\b(?P<m>{_MONTH_NAMES})\b\.?(?:\s*,?\s*(?P<y>\d{{4}}))?"),
        _month,
    ),
    (
        re.compile(r"\b(?:in|for|during)\s+(?:the\s+year\s+)?(\d{4})\b"),
        lambda m, t: PeriodSpec(kind=PeriodKind.YEAR, year=int(m.group(1))),
    ),
    (
        re.compile(rf"\b(?:on\s+|last\s+)?(?P<d>{_WEEKDAY_NAMES})\b(?!s)"),
        lambda m, t: PeriodSpec(kind=PeriodKind.WEEKDAY, weekday=_WEEKDAYS[m.group("d")]),
    ),
]


def parse_periods(text: str, as_of: date | None = None) -> list[PeriodSpec]:
    """Every time expression in ``text``, in order of appearance (overlaps: the longest wins).

    Deterministic and English-only; ``as_of`` is accepted for future
    phrasings that need it (the specs themselves stay relative).
    """
    today = as_of or date.today()
    lowered = " ".join(text.lower().split())
    candidates: list[tuple[int, int, PeriodSpec]] = []
    for pattern, build in _PHRASES:
        for match in pattern.finditer(lowered):
            try:
                spec = build(match, today)
            except ValueError:  # e.g. 2026-02-30
                continue
            if spec is not None:
                start = match.start() + (len(match.group(0)) - len(match.group(0).lstrip()))
                candidates.append((start, match.end(), spec))
    candidates.sort(key=lambda c: (c[0] - c[1], c[0]))  # longest first
    chosen: list[tuple[int, int, PeriodSpec]] = []
    for start, end, spec in candidates:
        if all(end <= s or e <= start for s, e, _ in chosen):
            chosen.append((start, end, spec))
    return [spec for _, _, spec in sorted(chosen, key=lambda c: c[0])]


def parse_period(text: str, as_of: date | None = None) -> PeriodSpec | None:
    """The first time expression in ``text``, or None."""
    found = parse_periods(text, as_of)
    return found[0] if found else None


__all__ = [
    "MAX_DAYS",
    "Grain",
    "Period",
    "PeriodKind",
    "PeriodSpec",
    "describe",
    "parse_period",
    "parse_periods",
    "resolve_period",
    "today_in",
    "zone",
]
