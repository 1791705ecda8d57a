"""Demand simulation: the transactions of one merchant on one local day.

The simulation is streaming: a merchant-day is generated, returned as rows
and forgotten. Across days a merchant only keeps ``MerchantState``: a bounded
pool of recent successful payments (refunds and chargebacks pick their
original from it) and the corrected copies of a few records that are to be
re-delivered in a later partition.
"""

from __future__ import annotations

import math
import random
from bisect import bisect, bisect_left
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from .catalog import CARD_METHODS, PAYMENT_METHODS
from .events import BASE_FAIL_RATE, DayEffects
from .model import MerchantProfile, format_offset
from .money import format_minor, minor_formatter

HOURS = tuple(range(24))
_MMSS = tuple(f"{s // 60:02d}:{s % 60:02d}" for s in range(3600))
_UTC = ZoneInfo("UTC")

POOL_CAP = 250
CANCEL_RATE = 0.01
CHARGEBACK_RATE = 0.0008
CUSTOM_AMOUNT_RATE = 0.015
RANDOM_UPDATED_AT_RATE = 0.03
CORRECTION_RATE = 1 / 12
# Share of payments made with each method that identify the customer
# (tokenised card or wallet; cash rarely does).
_CUSTOMER_PROB = {"CARD": 0.82, "CONTACTLESS": 0.78, "WALLET": 0.85, "CASH": 0.06, "QR": 0.9, "OTHER": 0.5}


@dataclass(frozen=True)
class DayClock:
    """Wall-clock facts of one local date in one time zone.

    ``prefixes[h]`` is ``None`` for an hour that does not fully exist on that
    date (the hour skipped when DST starts), so nothing is ever stamped in it.
    In the repeated hour when DST ends the first occurrence is used, which
    keeps wall-clock order equal to real order.
    """

    day: date
    day_index: int
    ymd: str
    prefixes: tuple[str | None, ...]
    offsets: tuple[str, ...]
    deltas: tuple[timedelta, ...]
    has_gap: bool

    def valid(self, secs: int) -> bool:
        """Whether second-of-day ``secs`` is a stampable local time."""
        return 0 <= secs < 86400 and self.prefixes[secs // 3600] is not None

    def stamp(self, secs: int) -> str:
        """Local ISO timestamp with offset for a valid second-of-day."""
        h = secs // 3600
        prefix = self.prefixes[h]
        assert prefix is not None
        return prefix + _MMSS[secs % 3600] + self.offsets[h]

    def utc(self, secs: int, delay: int = 0) -> str:
        """UTC ``Z`` timestamp ``delay`` seconds after local second ``secs``."""
        moment = datetime.combine(self.day, time()) + timedelta(seconds=secs + delay)
        return (moment - self.deltas[secs // 3600]).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_clock(tz: ZoneInfo, day: date, day_index: int) -> DayClock:
    """Compute the per-hour offsets of ``day`` in ``tz``."""
    prefixes: list[str | None] = []
    offsets: list[str] = []
    deltas: list[timedelta] = []
    iso = day.isoformat()
    for h in range(24):
        a = datetime(day.year, day.month, day.day, h, 0, 0, tzinfo=tz)
        b = datetime(day.year, day.month, day.day, h, 59, 59, tzinfo=tz)
        off_a, off_b = a.utcoffset(), b.utcoffset()
        assert off_a is not None and off_b is not None
        exists = all(x.astimezone(_UTC).astimezone(tz).replace(tzinfo=None) == x.replace(tzinfo=None) for x in (a, b))
        prefixes.append(f"{iso}T{h:02d}:" if exists and off_a == off_b else None)
        offsets.append(format_offset(off_a))
        deltas.append(off_a)
    return DayClock(
        day, day_index, day.strftime("%Y%m%d"), tuple(prefixes), tuple(offsets), tuple(deltas), None in prefixes
    )


class Paid(NamedTuple):
    """A successful payment that may still be refunded."""

    tx_id: str
    secs: int
    amount: int
    tip: int
    items: str
    lines: tuple[tuple[str, int, int], ...]
    method: str
    scheme: str
    customer: str
    location: str


@dataclass(frozen=True)
class CatalogView:
    """Products that can be sold on a day, with sampling weights."""

    ids: tuple[str, ...]
    names: tuple[str, ...]
    prices: tuple[int, ...]
    price_strs: tuple[str, ...]
    cum: tuple[float, ...]


@dataclass(frozen=True)
class Receipt:
    """What a printed receipt of a payment shows."""

    transaction_id: str
    occurred_at: str
    secs: int
    lines: tuple[tuple[str, int, int], ...]
    subtotal: int
    tip: int
    amount: int
    method: str
    scheme: str


@dataclass
class MerchantState:
    """The bounded memory a merchant carries from one day to the next."""

    pool: list[Paid] = field(default_factory=list)
    pending: dict[int, list[list[str]]] = field(default_factory=dict)
    views: dict[tuple[int, frozenset[str]], CatalogView] = field(default_factory=dict)

    def view(self, profile: MerchantProfile, day_index: int, stopped: frozenset[str]) -> CatalogView:
        """Sellable catalogue on a day, cached per catalogue version."""
        version = sum(1 for c in profile.changes if c.day_index <= day_index)
        key = (version, stopped)
        cached = self.views.get(key)
        if cached is not None:
            return cached
        sellable = [p for p, active in profile.products_on(day_index) if active and p.product_id not in stopped]
        weights = [p.weight for p in sellable]
        cum: list[float] = []
        total = 0.0
        for w in weights:
            total += w
            cum.append(total)
        view = CatalogView(
            ids=tuple(p.product_id for p in sellable),
            names=tuple(p.name for p in sellable),
            prices=tuple(p.price_minor for p in sellable),
            price_strs=tuple(format_minor(p.price_minor, profile.exponent) for p in sellable),
            cum=tuple(cum),
        )
        self.views[key] = view
        return view


@dataclass
class DayOutput:
    """Rows of one merchant-day plus what the attachments need from it."""

    rows: list[list[str]]
    receipt: Receipt | None
    successful_payments: int


def _round(rng: random.Random, x: float) -> int:
    """Stochastic rounding, so small expected counts still average right."""
    n = int(x)
    return n + (1 if rng.random() < x - n else 0)


def _hours_cum(profile: MerchantProfile, clock: DayClock) -> tuple[float, ...]:
    if not clock.has_gap:
        return profile.hours_cum
    out: list[float] = []
    total = 0.0
    for h, w in enumerate(profile.hours):
        total += w if clock.prefixes[h] is not None else 0.0
        out.append(total)
    return tuple(out)


def simulate_day(
    profile: MerchantProfile,
    state: MerchantState,
    clock: DayClock,
    effects: DayEffects,
    rng: random.Random,
    days_total: int,
    redeliveries: list[dict[str, Any]],
    want_receipt: bool = False,
) -> DayOutput:
    """Simulate one merchant's transactions on one local day.

    Args:
        profile: The merchant.
        state: Its carried state; updated in place.
        clock: The local date's offsets.
        effects: Active injected events.
        rng: The merchant-day's random stream.
        days_total: Number of days in the run (corrections are only
            scheduled for days that will be generated).
        redeliveries: Receives one label per scheduled corrected record.
        want_receipt: Whether to return a receipt of one payment.

    Returns:
        Rows in contract column order, corrections first, then by time.
    """
    out_rows = state.pending.pop(clock.day_index, [])
    factor = profile.weekday[clock.day.weekday()]
    if factor <= 0:
        return DayOutput(out_rows, None, 0)

    rand = rng.random
    mid = profile.merchant_id
    cur = profile.currency
    exp = profile.exponent
    fm = minor_formatter(exp)
    view = state.view(profile, clock.day_index, effects.stopped)
    n_products = len(view.ids)
    hours_cum = _hours_cum(profile, clock)
    if not view.ids or hours_cum[-1] <= 0:
        return DayOutput(out_rows, None, 0)

    trend = math.exp(profile.growth * clock.day_index / 365.0)
    noise = min(1.1, max(0.9, rng.gauss(1.0, 0.05)))
    expected = profile.base_daily * factor * trend * noise * effects.volume
    n = _round(rng, expected)
    secs_list = sorted(h * 3600 + int(rand() * 3600) for h in rng.choices(HOURS, cum_weights=hours_cum, k=n))

    full_outage = effects.full_outage
    oh = effects.outage_hours
    o_lo, o_hi = (oh[0] * 3600, oh[1] * 3600) if oh else (0, 0)
    fail_rate = effects.fail_rate if effects.fail_rate is not None else BASE_FAIL_RATE
    retry_prob = 0.5 if effects.fail_rate is not None else 0.7
    methods_cum = profile.methods_cum
    methods_total = methods_cum[-1]
    schemes = profile.schemes
    schemes_cum = profile.schemes_cum
    schemes_total = schemes_cum[-1]
    basket_cum = profile.basket_cum
    basket_total = basket_cum[-1]
    locations = profile.locations
    loc_cum = profile.locations_cum
    tip_prob = profile.tip_prob
    tip_lo, tip_hi = profile.country.tip_share
    round_up = profile.country.tip_culture < 1.0
    pool_size = profile.customer_pool
    ids, prices, price_strs, pcum = view.ids, view.prices, view.price_strs, view.cum
    ptotal = pcum[-1]
    # Upper bounds for bisect: x * total can round up to total itself.
    last = n_products - 1
    n_methods = len(methods_cum) - 1
    n_schemes = len(schemes_cum) - 1
    n_basket = len(basket_cum) - 1
    n_locations = max(0, len(loc_cum) - 1)

    # attempt = (secs, row, lines, subtotal, tip)
    attempts: list[tuple[int, list[str], tuple[tuple[str, int, int], ...], int, int]] = []

    def in_outage(t: int) -> bool:
        return full_outage or o_lo <= t < o_hi

    any_outage = full_outage or oh is not None
    prefixes, offsets = clock.prefixes, clock.offsets
    for t in secs_list:
        outage_now = any_outage and in_outage(t)
        if outage_now and not (full_outage and rand() < 0.03):
            # The POS is down: some customers try and fail, most leave.
            if rand() < 0.4:
                status_forced = "FAILED"
            else:
                continue
        else:
            status_forced = ""

        method = PAYMENT_METHODS[bisect(methods_cum, rand() * methods_total, 0, n_methods)]
        if status_forced and method == "CASH":
            method = "CARD"
        card_like = method in CARD_METHODS
        scheme = schemes[bisect(schemes_cum, rand() * schemes_total, 0, n_schemes)] if card_like else ""

        if rand() < CUSTOM_AMOUNT_RATE:
            lines: tuple[tuple[str, int, int], ...] = ()
            items = ""
            step = 10 if exp == 0 else 50
            subtotal = max(step, int(prices[int(rand() * n_products)] * (0.5 + 2.5 * rand())) // step * step)
        else:
            k = bisect(basket_cum, rand() * basket_total, 0, n_basket) + 1
            if k == 1:
                counts = {bisect(pcum, rand() * ptotal, 0, last): 1}
            else:
                counts = {}
                for _ in range(k):
                    i = bisect(pcum, rand() * ptotal, 0, last)
                    counts[i] = counts.get(i, 0) + 1
            parts = []
            built = []
            subtotal = 0
            for i, q in counts.items():
                if rand() < 0.12:
                    q += 1
                subtotal += q * prices[i]
                built.append((ids[i], q, prices[i]))
                parts.append(f'{{"product_id": "{ids[i]}", "quantity": {q}, "unit_price": "{price_strs[i]}"}}')
            lines = tuple(built)
            items = "[" + ", ".join(parts) + "]"

        tip = 0
        if card_like and tip_prob and rand() < tip_prob:
            if round_up and rand() < 0.5 and exp == 2:
                tip = 100 - subtotal % 100
            else:
                tip = max(10, int(subtotal * (tip_lo + (tip_hi - tip_lo) * rand())) // 10 * 10)

        if status_forced:
            status = status_forced
        else:
            u = rand()
            f = 0.0 if method == "CASH" else fail_rate
            status = "FAILED" if u < f else "CANCELLED" if u < f + CANCEL_RATE else "SUCCESSFUL"

        customer = profile.customer_id(int(pool_size * rand() ** 2)) if rand() < _CUSTOMER_PROB[method] else ""
        location = locations[bisect(loc_cum, rand() * loc_cum[-1], 0, n_locations)] if locations else ""
        updated = clock.utc(t, rng.randint(1, 90)) if rand() < RANDOM_UPDATED_AT_RATE else ""
        amount = subtotal + tip
        h = t // 3600
        # Inlined DayClock.stamp: this is the hottest line of the generator.
        stamp = prefixes[h] + _MMSS[t - h * 3600] + offsets[h]  # type: ignore[operator]
        row = [
            "",
            mid,
            stamp,
            "PAYMENT",
            status,
            fm(amount),
            fm(tip),
            cur,
            method,
            scheme,
            customer,
            location,
            "",
            items,
            updated,
        ]
        attempts.append((t, row, lines, subtotal, tip))

        if status == "FAILED" and not outage_now and rand() < retry_prob:
            t2 = t + rng.randint(25, 180)
            if clock.valid(t2) and not in_outage(t2):
                if rand() < 0.6:
                    row2 = [
                        "",
                        mid,
                        clock.stamp(t2),
                        "PAYMENT",
                        "SUCCESSFUL",
                        row[5],
                        row[6],
                        cur,
                        method,
                        scheme,
                        customer,
                        location,
                        "",
                        items,
                        "",
                    ]
                    attempts.append((t2, row2, lines, subtotal, tip))
                else:
                    # Paid cash instead: no card tip, usually anonymous.
                    row2 = [
                        "",
                        mid,
                        clock.stamp(t2),
                        "PAYMENT",
                        "SUCCESSFUL",
                        fm(subtotal),
                        fm(0),
                        cur,
                        "CASH",
                        "",
                        "",
                        location,
                        "",
                        items,
                        "",
                    ]
                    attempts.append((t2, row2, lines, subtotal, 0))

    attempts.sort(key=lambda a: a[0])
    prefix = f"tx_{mid}_{clock.ymd}_"
    today: list[Paid] = []
    receipt: Receipt | None = None
    for seq, (t, row, lines, subtotal, tip) in enumerate(attempts, start=1):
        row[0] = f"{prefix}{seq:05d}"
        if row[4] == "SUCCESSFUL":
            amount = subtotal + tip
            today.append(Paid(row[0], t, amount, tip, row[13], lines, row[8], row[9], row[10], row[11]))
            if want_receipt and receipt is None and lines:
                receipt = Receipt(row[0], row[2], t, lines, subtotal, tip, amount, row[8], row[9])
    seq = len(attempts)
    timed: list[tuple[int, list[str]]] = [(a[0], a[1]) for a in attempts]
    rows_by_id = {a[1][0]: a[1] for a in attempts} if today else {}

    # Schedule a correction of one of today's payments, re-delivered later.
    if today and rand() < CORRECTION_RATE:
        lag = rng.randint(1, 3)
        if clock.day_index + lag < days_total:
            candidates = [p for p in today if receipt is None or p.tx_id != receipt.transaction_id]
            if candidates:
                paid = rng.choice(candidates)
                today.remove(paid)
                original = rows_by_id[paid.tx_id]
                original[14] = clock.utc(paid.secs, rng.randint(2, 40))
                corrected = list(original)
                if not paid.customer and rand() < 0.5:
                    change, fields = "customer_linked", ["customer_id"]
                    corrected[10] = profile.customer_id(int(pool_size * rand() ** 2))
                elif paid.method in CARD_METHODS and profile.country.tip_culture > 0 and rand() < 0.6:
                    change, fields = "tip_adjusted", ["amount", "tip_amount"]
                    extra = max(10, int((paid.amount - paid.tip) * 0.1) // 10 * 10)
                    corrected[5] = fm(paid.amount + extra)
                    corrected[6] = fm(paid.tip + extra)
                else:
                    change, fields = "voided", ["status"]
                    corrected[4] = "CANCELLED"
                later = clock.day + timedelta(days=lag)
                moment = datetime(
                    later.year, later.month, later.day, 4, rng.randint(0, 59), rng.randint(0, 59), tzinfo=profile.tz
                )
                corrected[14] = moment.astimezone(_UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                state.pending.setdefault(clock.day_index + lag, []).append(corrected)
                redeliveries.append(
                    {
                        "merchant_id": mid,
                        "transaction_id": paid.tx_id,
                        "first_dt": clock.day.isoformat(),
                        "redelivered_dt": later.isoformat(),
                        "change": change,
                        "fields": fields,
                        "first_updated_at": original[14],
                        "updated_at": corrected[14],
                    }
                )

    # Refunds: originals come from earlier days (pool) or earlier today.
    refund_rate = effects.refund_rate if effects.refund_rate is not None else profile.cat.refund_rate
    n_refunds = _round(rng, len(today) * refund_rate)
    today_secs = [p.secs for p in today]
    pool = state.pool
    for _ in range(n_refunds):
        t = rng.choices(HOURS, cum_weights=hours_cum)[0] * 3600 + int(rand() * 3600)
        if in_outage(t):
            continue
        bound = bisect_left(today_secs, t)
        if bound and (rand() < 0.3 or not pool):
            j = int(rand() * bound)
            paid = today.pop(j)
            today_secs.pop(j)
        elif pool:
            paid = pool.pop(int(rand() * len(pool)))
        else:
            continue
        seq += 1
        if len(paid.lines) and rand() < 0.35 and (len(paid.lines) > 1 or paid.lines[0][1] > 1):
            pid, _, unit = max(paid.lines, key=lambda x: (x[2], x[0]))
            amount, tip = unit, 0
            items = f'[{{"product_id": "{pid}", "quantity": 1, "unit_price": "{fm(unit)}"}}]'
        else:
            amount, tip, items = paid.amount, paid.tip, paid.items
        status = "SUCCESSFUL" if rand() < 0.97 else "FAILED"
        timed.append(
            (
                t,
                [
                    f"{prefix}{seq:05d}",
                    mid,
                    clock.stamp(t),
                    "REFUND",
                    status,
                    fm(amount),
                    fm(tip),
                    cur,
                    paid.method,
                    paid.scheme,
                    paid.customer,
                    paid.location,
                    paid.tx_id,
                    items,
                    "",
                ],
            )
        )

    # Chargebacks are rare and arrive weeks later: take the oldest card payment.
    for _ in range(_round(rng, len(today) * CHARGEBACK_RATE)):
        j = next((i for i, p in enumerate(pool) if p.method in CARD_METHODS), -1)
        if j < 0:
            break
        paid = pool.pop(j)
        t = rng.choices(HOURS, cum_weights=hours_cum)[0] * 3600 + int(rand() * 3600)
        seq += 1
        timed.append(
            (
                t,
                [
                    f"{prefix}{seq:05d}",
                    mid,
                    clock.stamp(t),
                    "CHARGEBACK",
                    "SUCCESSFUL",
                    fm(paid.amount),
                    fm(0),
                    cur,
                    paid.method,
                    paid.scheme,
                    paid.customer,
                    paid.location,
                    paid.tx_id,
                    "",
                    "",
                ],
            )
        )

    pool.extend(today)
    if len(pool) > POOL_CAP:
        del pool[: len(pool) - POOL_CAP]
    timed.sort(key=lambda x: x[0])
    out_rows.extend(r for _, r in timed)
    successes = sum(1 for a in attempts if a[1][4] == "SUCCESSFUL")
    return DayOutput(out_rows, receipt, successes)
