"""The candidate insight a detector returns, and the facts that back it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

Direction = Literal["up", "down"]
# (kind, metric, subject or "", direction): what a cooldown is keyed on. The
# direction is part of it so a drop the day after a surge is still reported.
Signature = tuple[str, str, str, str]


@dataclass(frozen=True)
class Fact:
    """One number computed by code, with where it came from.

    Attributes:
        name: Stable name, e.g. ``net_sales`` or ``net_sales_expected``.
        value: The number (money in minor units, counts as ints, ratios as floats).
        unit: ``minor`` (with ``currency``), ``count``, ``ratio``, ``stars`` or ``hour``.
        period_start: First merchant-local day the value covers.
        period_end: Last merchant-local day the value covers (inclusive).
        source: How it was computed: table, column, aggregation and the days used.
        currency: ISO 4217 code for ``minor`` values.
    """

    name: str
    value: int | float
    unit: str
    period_start: date
    period_end: date
    source: dict[str, Any]
    currency: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (the shape stored in ``insights.facts``)."""
        out: dict[str, Any] = {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "period": {"start": self.period_start.isoformat(), "end": self.period_end.isoformat()},
            "source": self.source,
        }
        if self.currency is not None:
            out["currency"] = self.currency
        return out


@dataclass
class Insight:
    """A candidate (or selected) proactive insight for one merchant.

    ``observed`` and ``expected`` are in ``unit``; ``impact_minor`` is the signed
    money effect in the merchant's currency (0 when it has none, e.g. ratings).
    ``subject`` narrows the finding (a product id, an hour range) and is part
    of the cooldown identity ``(kind, metric, subject)``. ``related`` holds the
    candidates this one absorbed as the same root cause.
    """

    merchant_id: str
    kind: str
    metric: str
    direction: Direction
    period_start: date
    period_end: date
    observed: float
    expected: float
    unit: str
    impact_minor: int
    currency: str
    confidence: float
    subject: str | None
    dedup_key: str
    facts: list[Fact] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)
    # Ranking weight of findings without money (ratings), as a share of a typical day's sales.
    severity: float = 0.0
    # The merchant's typical daily net sales (minor units): scores compare impact with it.
    typical_daily_minor: int = 0
    score: float = 0.0
    related: list[Insight] = field(default_factory=list)

    @property
    def signature(self) -> Signature:
        """The cooldown identity: (kind, metric, subject, direction)."""
        return (self.kind, self.metric, self.subject or "", self.direction)

    def signatures(self) -> set[Signature]:
        """This insight's identity and those of the candidates it absorbed."""
        return {self.signature, *(r.signature for r in self.related)}

    def overlaps(self, other: Insight) -> bool:
        """Whether the two periods share a day."""
        return self.period_start <= other.period_end and other.period_start <= self.period_end


def make_key(kind: str, metric: str, subject: str | None, anchor: date) -> str:
    """Stable dedup key: a re-run of the same day, or a later day that sees the same run, gives the same key."""
    return f"{kind}:{metric}:{subject or '-'}:{anchor.isoformat()}"
