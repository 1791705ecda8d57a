"""Injected, labelled events: what happens to a merchant on which days.

Events are planned before simulation so that each can be placed where it is
detectable: on trading days, at least a week into the range (so the same
weekday a week earlier is a clean baseline), and without overlapping another
event or another event's baseline day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from .model import MerchantProfile, derive_rng

EVENT_KINDS: tuple[str, ...] = (
    "outage",
    "product_stops_selling",
    "demand_surge",
    "refund_spike",
    "payment_failures",
    "rating_drop",
)

BASE_FAIL_RATE = 0.022


def is_quiet(index: int) -> bool:
    """Whether merchant number ``index`` (0-based) is left without events."""
    return index % 4 == 2


@dataclass(frozen=True)
class Event:
    """One injected event on a range of day indices (inclusive)."""

    event_id: str
    merchant_id: str
    kind: str
    start: int
    end: int
    metric: str
    direction: str
    magnitude: float
    description: str
    product_id: str | None = None
    product_name: str | None = None
    hours: tuple[int, int] | None = None
    volume: float = 1.0
    refund_rate: float | None = None
    fail_rate: float | None = None

    def label(self, first_day: date) -> dict[str, Any]:
        """The event as written to ``labels.json``."""
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "merchant_id": self.merchant_id,
            "kind": self.kind,
            "start_date": (first_day + timedelta(days=self.start)).isoformat(),
            "end_date": (first_day + timedelta(days=self.end)).isoformat(),
            "metric": self.metric,
            "direction": self.direction,
            "magnitude": self.magnitude,
            "description": self.description,
        }
        if self.start >= 7:
            out["baseline_date"] = (first_day + timedelta(days=self.start - 7)).isoformat()
        if self.product_id is not None:
            out["product_id"] = self.product_id
            out["product_name"] = self.product_name
        if self.hours is not None:
            out["start_hour"], out["end_hour"] = self.hours
        return out


@dataclass(frozen=True)
class DayEffects:
    """How the active events change one merchant-day."""

    volume: float = 1.0
    full_outage: bool = False
    outage_hours: tuple[int, int] | None = None
    refund_rate: float | None = None
    fail_rate: float | None = None
    rating_drop: bool = False
    complaint: str | None = None
    stopped: frozenset[str] = field(default_factory=frozenset)


NO_EFFECTS = DayEffects()


def effects_on(events: list[Event], day_index: int) -> DayEffects:
    """Combine the events active on a day into one ``DayEffects``."""
    active = [e for e in events if e.start <= day_index <= e.end]
    if not active:
        return NO_EFFECTS
    volume = 1.0
    full = False
    hours: tuple[int, int] | None = None
    refund_rate: float | None = None
    fail_rate: float | None = None
    rating = False
    complaint: str | None = None
    stopped: set[str] = set()
    for e in active:
        volume *= e.volume
        if e.kind == "outage":
            full = e.hours is None
            hours = e.hours
            complaint = "outage"
        elif e.kind == "refund_spike":
            refund_rate = e.refund_rate
            complaint = complaint or "refund"
        elif e.kind == "payment_failures":
            fail_rate = e.fail_rate
            complaint = complaint or "outage"
        elif e.kind == "rating_drop":
            rating = True
        elif e.kind == "product_stops_selling" and e.product_id is not None:
            stopped.add(e.product_id)
    return DayEffects(volume, full, hours, refund_rate, fail_rate, rating, complaint, frozenset(stopped))


def _outage_windows(profile: MerchantProfile) -> list[tuple[int, int]]:
    """All (start, end) windows of 3..5 consecutive open hours."""
    out = []
    for length in (3, 4, 5):
        for h in range(24 - length + 1):
            if all(profile.hours[x] > 0 for x in range(h, h + length)):
                out.append((h, h + length))
    return out or [(12, 15)]


def plan_events(profile: MerchantProfile, first_day: date, days: int, seed: int) -> list[Event]:
    """Plan the injected events of one merchant.

    Args:
        profile: The merchant.
        first_day: First generated day.
        days: Number of generated days.
        seed: Run seed.

    Returns:
        The events, possibly empty (quiet merchants, or ranges too short).
    """
    if is_quiet(profile.index):
        return []
    rng = derive_rng(seed, "events", profile.merchant_id)
    ordinal = profile.index - (profile.index + 1) // 4
    count = max(1, min(4, days // 7))
    kinds = [EVENT_KINDS[(2 * ordinal + t) % len(EVENT_KINDS)] for t in range(count)]
    first = 7 if days >= 10 else 0

    def is_open(d: int) -> bool:
        return profile.is_open(first_day + timedelta(days=d))

    occupied: set[int] = set()
    baselines: set[int] = set()
    events: list[Event] = []
    for kind in kinds:
        eid = f"ev_{profile.merchant_id}_{len(events) + 1}"
        if kind == "product_stops_selling":
            starts = [d for d in range(first, days - 2) if is_open(d)]
            if not starts:
                continue
            start = rng.choice(starts)
            product = profile.top_product()
            events.append(
                Event(
                    eid,
                    profile.merchant_id,
                    kind,
                    start,
                    days - 1,
                    "units_sold",
                    "down",
                    -1.0,
                    f"{product.name} stops selling (0 units) from this day on",
                    product_id=product.product_id,
                    product_name=product.name,
                )
            )
            continue
        if kind == "rating_drop":
            length = min(7, days - first)
            if length < 3:
                continue
            start = rng.randint(first, days - length)
            events.append(
                Event(
                    eid,
                    profile.merchant_id,
                    kind,
                    start,
                    start + length - 1,
                    "rating",
                    "down",
                    round(1.8 - profile.quality, 2),
                    "Service quality problems: many more reviews, mostly 1-2 stars",
                )
            )
            continue
        length = {"outage": 1, "demand_surge": rng.randint(1, 3)}.get(kind, rng.randint(1, 2))
        starts = []
        for s in range(first, days - length + 1):
            window = range(s, s + length)
            if not all(is_open(w) for w in window):
                continue
            if any(w in occupied or w in baselines or (w - 7) in occupied for w in window):
                continue
            starts.append(s)
        if not starts:
            continue
        start = rng.choice(starts)
        end = start + length - 1
        chosen = set(range(start, end + 1))
        occupied |= chosen
        baselines |= {w - 7 for w in chosen}
        if kind == "outage":
            if rng.random() < 0.5:
                events.append(
                    Event(
                        eid,
                        profile.merchant_id,
                        kind,
                        start,
                        end,
                        "transactions",
                        "down",
                        -0.97,
                        "Payment system outage all day: almost no successful payments",
                        volume=1.0,
                    )
                )
            else:
                h1, h2 = rng.choice(_outage_windows(profile))
                total = sum(profile.hours)
                share = sum(profile.hours[h1:h2]) / total if total else 0.0
                events.append(
                    Event(
                        eid,
                        profile.merchant_id,
                        kind,
                        start,
                        end,
                        "transactions",
                        "down",
                        -round(share, 2),
                        f"Payment outage {h1:02d}:00-{h2:02d}:00 local time: no successful payments",
                        hours=(h1, h2),
                    )
                )
        elif kind == "demand_surge":
            magnitude = round(rng.uniform(0.5, 1.5), 2)
            events.append(
                Event(
                    eid,
                    profile.merchant_id,
                    kind,
                    start,
                    end,
                    "transactions",
                    "up",
                    magnitude,
                    f"Demand surge (+{magnitude * 100:.0f}% transactions), e.g. an event nearby",
                    volume=1.0 + magnitude,
                )
            )
        elif kind == "refund_spike":
            rate = rng.uniform(0.15, 0.25)
            events.append(
                Event(
                    eid,
                    profile.merchant_id,
                    kind,
                    start,
                    end,
                    "refunds",
                    "up",
                    round(rate / profile.cat.refund_rate - 1, 1),
                    f"Refund spike: about {rate * 100:.0f}% of payments refunded",
                    refund_rate=rate,
                )
            )
        elif kind == "payment_failures":
            rate = rng.uniform(0.3, 0.45)
            events.append(
                Event(
                    eid,
                    profile.merchant_id,
                    kind,
                    start,
                    end,
                    "failed_payments",
                    "up",
                    round(rate / BASE_FAIL_RATE - 1, 1),
                    f"Card payment failure rate rose to about {rate * 100:.0f}%",
                    fail_rate=rate,
                )
            )
    return sorted(events, key=lambda e: (e.start, e.event_id))
